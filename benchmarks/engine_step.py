"""The engine alone, no Triton: decode steps/s of the random Qwen-7B-shape engine at given batch sizes, with
the time split between the model runner, the sampler and the rest of the loop. Separates engine cost from
serving cost when reading the ensemble benchmark. Measures; asserts nothing."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from qwen_triton.config import QuantConfig
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .gpu import LIMITS
from .quant_gpu import MODES


class Timed:
    """Wraps a callable and accumulates its wall time (synchronising CUDA so GPU work is counted)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.fn(*args)
        torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def measure(runner: ModelRunner, batch: int, prompt_len: int, new_tokens: int, overlap: bool) -> dict:
    """Decode steps/s. Without overlap the runner and sampler are timed apart (each synchronised); with
    overlap only the wall time is honest, since the point is that host and GPU work run at once."""
    engine = Engine(runner, LIMITS, overlap=overlap)
    execute, sample = Timed(runner.execute), Timed(engine.sampler.sample)
    if not overlap:
        engine.runner = type("R", (), {"execute": execute, "num_kv_blocks": runner.num_kv_blocks})()
        engine.sampler.sample = sample
    for i in range(batch):
        engine.submit([1000 + i] * prompt_len, SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens), lambda e: True)
    engine.step()  # prefill
    torch.cuda.synchronize()
    execute.seconds = sample.seconds = 0.0
    start, steps = time.perf_counter(), 0
    while engine.step():
        steps += 1
    total = time.perf_counter() - start
    result = {"batch": batch, "overlap": overlap, "ms_per_step": round(1000 * total / steps, 2),
              "tok_s": round(batch * steps / total, 1)}
    if not overlap:
        result.update(runner_ms=round(1000 * execute.seconds / steps, 2), sampler_ms=round(1000 * sample.seconds / steps, 2))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--prompt-len", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--quantized", choices=list(MODES), help="the engine quantized at load (default 16-bit)")
    args = parser.parse_args(argv)
    engine_dir = Path(tempfile.mkdtemp(prefix="qwen-engine-")) / "engine"
    runner = ModelRunner(make_random_engine(engine_dir, QWEN_7B, LIMITS,
                                            quantization=MODES.get(args.quantized, QuantConfig())), device="cuda")
    for batch in args.batch:
        for overlap in (False, True):
            print(json.dumps(measure(runner, batch, args.prompt_len, args.new_tokens, overlap)), flush=True)


if __name__ == "__main__":
    main()
