"""Prefix caching on a multi-turn chat, the engine alone (no Triton): each turn's prompt is the system prompt,
every earlier turn (the user's tokens and the answer's) and a new user message, as a chat client re-sends it;
time to first token and prompt tokens computed per turn, with enable_kv_cache_reuse off and on, in one run.
Best case for reuse: the answers are re-sent as the very ids generated (a client re-tokenizing the text may get
other ids past the answer's first differing token). Measures; asserts nothing.

    python -m benchmarks.prefix_reuse --out benchmarks/results/prefix_reuse_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from qwen_triton.config import load_engine_folder
from qwen_triton.engine_api import SamplingParams
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner

ROOT = Path(__file__).resolve().parents[1]


def chat(engine: Engine, system: list[int], turns: int, user_tokens: int, answer_tokens: int) -> list[dict]:
    """One conversation; per turn: prompt length, ms to the first token, prompt tokens the engine computed."""
    history, rows = list(system), []
    computed = []
    count = engine._count_step
    engine._count_step = lambda schedule: (count(schedule), computed.append(engine._last_step["context_tokens"]))
    for turn in range(turns):
        prompt = history + [1000 + 37 * turn + i for i in range(user_tokens)]
        first, answer = [], []

        def sink(event):
            if not first:
                first.append(time.perf_counter())
            answer.extend(event.new_token_ids)
            return True

        computed.clear()
        start = time.perf_counter()
        engine.submit(prompt, SamplingParams(max_tokens=answer_tokens, min_tokens=answer_tokens), sink)
        while engine.step():
            pass
        rows.append({"prompt_tokens": len(prompt), "ttft_ms": round(1000 * (first[0] - start), 3),
                     "computed_prompt_tokens": sum(computed[:1])})
        history = prompt + answer
    engine._count_step = count
    return rows


def run(folder, device: str, reuse: bool, args) -> dict:
    runner = ModelRunner(folder, device=device)
    engine = Engine(runner, replace(folder.config.limits, enable_kv_cache_reuse=reuse))
    system = [2000 + i for i in range(args.system_tokens)]
    chat(engine, [3000 + i for i in range(args.system_tokens)], 2, args.user_tokens, args.answer_tokens)  # warm-up
    runs = [chat(engine, [s + 7919 * r for s in system], args.turns, args.user_tokens, args.answer_tokens)
            for r in range(1, args.repeats + 1)]  # each conversation its own: nothing shared across runs
    per_turn = [{"prompt_tokens": runs[0][t]["prompt_tokens"],
                 "ttft_ms_median": round(statistics.median(run[t]["ttft_ms"] for run in runs), 3),
                 "computed_prompt_tokens": runs[0][t]["computed_prompt_tokens"]} for t in range(args.turns)]
    return {"enable_kv_cache_reuse": reuse, "per_turn": per_turn,
            "ttft_ms_median_over_turns_2_on": round(statistics.median(t["ttft_ms_median"] for t in per_turn[1:]), 3),
            "computed_prompt_tokens_total": sum(t["computed_prompt_tokens"] for t in per_turn),
            "reused_kv_blocks": engine.stats().reused_kv_blocks}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default=str(ROOT / "engines" / "qwen-tiny"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--system-tokens", type=int, default=400)
    parser.add_argument("--user-tokens", type=int, default=24)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    folder = load_engine_folder(args.engine)
    result = {"command": "python -m benchmarks.prefix_reuse " + " ".join(sys.argv[1:] if argv is None else argv),
              "engine": Path(args.engine).name, "device": args.device,
              "host": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d"),
              "baseline": run(folder, args.device, False, args), "reuse": run(folder, args.device, True, args)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
