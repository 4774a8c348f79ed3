"""`python -m qwen_triton.openai_server --triton-url HOST:PORT`: the OpenAI-compatible server in front of a
Triton serving the ensemble (the same host or another), on one uvicorn event loop."""
from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from .app import Settings, create_app


def _args(argv):
    parser = argparse.ArgumentParser(prog="python -m qwen_triton.openai_server", description=__doc__)
    parser.add_argument("--triton-url", default=f"127.0.0.1:{os.environ.get('GRPC_PORT', 8001)}",
                        help="Triton's gRPC address, HOST:PORT (default 127.0.0.1:$GRPC_PORT or 8001)")
    parser.add_argument("--host", default=os.environ.get("BIND_ADDRESS", "127.0.0.1"),
                        help="address to listen on (default loopback; 0.0.0.0 exposes the server)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("OPENAI_PORT", 9000)))
    parser.add_argument("--model", default="ensemble",
                        help="the Triton model that answers: ensemble (default) or tensorrt_llm_bls")
    parser.add_argument("--served-model-name", default=None,
                        help="the model id clients send and /v1/models lists (default: --model)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length /v1/models reports (default: read from the engine folder when it "
                             "is on this host)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    settings = Settings(args.triton_url, args.model, args.served_model_name, args.max_model_len)
    print(f"OpenAI API for Triton {settings.triton_url} ({settings.triton_model}) on http://{args.host}:{args.port}"
          f"/v1 as model {settings.model_id!r}", flush=True)
    # One worker, one event loop: every request is a task on it and its Triton call a stream on one channel.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
