"""The engine alone, no Triton: time from submit() to the first token event for prompts of given lengths
(the engine thread running, as in serving), and the GPU kernel time of one prefill. Separates the
engine's share of time to first token from the serving path's. Measures; asserts nothing."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from qwen_triton.config import load_engine_folder
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .gpu import LIMITS


def first_token_ms(engine: Engine, prompt_len: int) -> float:
    first = threading.Event()
    start = time.perf_counter()
    engine.submit([1000 + i % 5000 for i in range(prompt_len)], SamplingParams(max_tokens=1),
                  lambda event: first.set() or True)
    first.wait(30)
    return 1000 * (time.perf_counter() - start)


def kernel_ms(runner: ModelRunner, prompt_len: int, table: bool = False) -> float:
    engine = Engine(runner, runner.config.limits)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.submit(list(range(1000, 1000 + prompt_len)), SamplingParams(max_tokens=1), lambda e: True)
        while engine.step():
            pass
        torch.cuda.synchronize()
    if table:
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    return sum(e.device_time_total for e in prof.key_averages()) / 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-len", type=int, nargs="+", default=[16, 128, 512, 1024])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--engine-dir", help="an engine folder (default: a random Qwen-7B-shape one, made here)")
    args = parser.parse_args(argv)
    folder = (load_engine_folder(args.engine_dir) if args.engine_dir
              else make_random_engine(Path(tempfile.mkdtemp()) / "engine", QWEN_7B, LIMITS))
    runner = ModelRunner(folder, device="cuda")
    engine = Engine(runner, runner.config.limits)
    engine.start()
    for n in args.prompt_len:
        first_token_ms(engine, n)  # shapes seen once (cuBLAS heuristics, allocator)
        samples = [first_token_ms(engine, n) for _ in range(args.repeats)]
        print(json.dumps({"prompt_len": n, "first_token_ms_p50": round(statistics.median(samples), 2),
                          "min": round(min(samples), 2), "max": round(max(samples), 2),
                          "kernel_ms": round(kernel_ms(runner, n, table=n == max(args.prompt_len)), 2)}), flush=True)
    engine.shutdown()


if __name__ == "__main__":
    main()
