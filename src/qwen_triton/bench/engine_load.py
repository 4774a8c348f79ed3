"""The engine alone under the served c64 load's shape, no Triton: `concurrency` virtual clients each keep one
request in flight (ShareGPT-like lengths, cycled; the next request is submitted when one finishes), with
mixed steps and with prefill steps only (same weights). Reports output tokens/s in a window and the engine's
own time to first token (submit -> first token event), so the scheduler's share of the served figures can
be told from the serving path's. A third variant caps the waiting queue for mixing (mixed_max_waiting).
Measures; asserts nothing."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from ..config import load_engine_folder
from ..runtime.engine import Engine, TokenEvent
from ..runtime.model_runner import ModelRunner
from ..runtime.request import SamplingParams
from ..tools.random_checkpoint import QWEN_7B
from ..tools.random_engine import make_random_engine
from .gpu import LIMITS
from .sharegpt import load_lengths


class ClosedLoop:
    """Virtual clients on one engine; sinks run on the engine thread and submit each client's next request."""

    def __init__(self, engine: Engine, lengths: list[tuple[int, int]]):
        self.engine = engine
        self.jobs = itertools.cycle(lengths)
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, int]] = []  # (time, output tokens) per token event
        self.first_token_s: list[tuple[float, float]] = []  # (submit time, time to first token)
        self.stopped = False

    def submit(self) -> None:
        with self.lock:
            prompt_len, max_tokens = next(self.jobs)
        start, seen = time.perf_counter(), []

        def sink(event: TokenEvent) -> bool:
            now = time.perf_counter()
            with self.lock:
                self.arrivals.append((now, len(event.new_token_ids)))
                if not seen and event.new_token_ids:
                    seen.append(now)
                    self.first_token_s.append((start, now - start))
            if event.finish_reason is not None and not self.stopped:
                self.submit()
            return True

        prompt = [1000 + (i * 7919) % 100_000 for i in range(prompt_len)]
        self.engine.submit(prompt, SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens), sink)

    def run(self, concurrency: int, warmup_s: float, window_s: float) -> dict:
        for _ in range(concurrency):
            self.submit()
        began = time.perf_counter()
        time.sleep(warmup_s + window_s)
        self.stopped = True
        lo, hi = began + warmup_s, began + warmup_s + window_s
        with self.lock:
            tokens = sum(n for t, n in self.arrivals if lo <= t < hi)
            ttft = sorted(1000 * d for s, d in self.first_token_s if lo <= s < hi)
        return {"output_tok_s": round(tokens / window_s, 1), "requests": len(ttft),
                "ttft_ms_p50": round(statistics.median(ttft), 2),
                "ttft_ms_p90": round(ttft[int(0.9 * (len(ttft) - 1))], 2)}


def measure(engine_dir: Path, args, lengths) -> dict:
    runner = ModelRunner(load_engine_folder(engine_dir), device="cuda")
    engine = Engine(runner, runner.config.limits)
    engine.start()
    try:
        return ClosedLoop(engine, lengths).run(args.concurrency, args.warmup_s, args.window_s)
    finally:
        engine.shutdown()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--lengths", default="benchmarks/sharegpt_lengths.json")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--max-waiting", type=int, default=1, help="mixed_max_waiting of the second variant")
    parser.add_argument("--out", help="also append the result lines here (JSONL, after a line naming the run)")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    lines = [{"command": "python -m qwen_triton.bench.engine_load " + " ".join(given),
              "gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat()}]
    lengths = load_lengths(args.lengths)
    root = Path(tempfile.mkdtemp(prefix="qwen-engine-load-"))
    variants = {"mixed steps": LIMITS,
                f"mixed steps while at most {args.max_waiting} wait": dataclasses.replace(
                    LIMITS, mixed_max_waiting=args.max_waiting),
                "prefill steps only": dataclasses.replace(LIMITS, mixed_prefill_tokens=0)}
    for i, (name, limits) in enumerate(variants.items()):
        engine_dir = root / f"engine-{i}"
        make_random_engine(engine_dir, QWEN_7B, limits)
        lines.append({"scheduling": name, "concurrency": args.concurrency, **measure(engine_dir, args, lengths)})
        print(json.dumps(lines[-1]), flush=True)
        gc.collect()  # the runner (weights, KV cache, graphs) goes before the next one is made
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "a") as out:
            out.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
