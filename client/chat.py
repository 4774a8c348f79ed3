"""python -m client.chat: streaming multi-turn chat with the served ensemble (history kept client-side)."""
import argparse
import os
import sys

from qwen_triton.client import QwenClient


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=f"127.0.0.1:{os.environ.get('GRPC_PORT', 8001)}")
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--once", default=None, help="send one message, print the answer and exit")
    args = parser.parse_args(argv)
    print("Qwen chat over Triton gRPC. Empty line or Ctrl-D quits; /reset clears the history.", file=sys.stderr)
    with QwenClient(args.url) as client:  # closes its gRPC stream (a non-daemon thread) on the way out
        return _chat(client, args)


def _chat(client: QwenClient, args) -> int:
    history: list[list[str]] = []
    while True:
        query = args.once if args.once is not None else _read("user> ")
        if not query:
            return 0
        if query.strip() == "/reset":
            history.clear()
            continue
        answer = []
        print("assistant> ", end="", flush=True)
        for chunk in client.stream(query, history=history or None, system_prompt=args.system_prompt,
                                   max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p):
            print(chunk.text, end="", flush=True)
            answer.append(chunk.text)
        print(f"\n[{chunk.finish_reason}; {chunk.num_input_tokens} prompt + {chunk.num_output_tokens} output tokens]",
              file=sys.stderr)
        history.append([query, "".join(answer)])
        if args.once is not None:
            return 0


def _read(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
