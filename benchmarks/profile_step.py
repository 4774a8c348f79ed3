"""GPU time of one decode step by kernel (torch.profiler, eager so each kernel is attributed), for the random
Qwen-7B-shape engine at a given batch and context length. Diagnostic only; prints the top kernels."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from qwen_triton.config import QuantConfig
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .gpu import LIMITS
from .quant_gpu import MODES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quantized", choices=list(MODES), help="the engine quantized at load (default 16-bit)")
    args = parser.parse_args(argv)
    folder = make_random_engine(Path(tempfile.mkdtemp()) / "engine", QWEN_7B, LIMITS,
                                quantization=MODES.get(args.quantized, QuantConfig()))
    runner = ModelRunner(folder, device="cuda", use_cuda_graphs=False)
    engine = Engine(runner, LIMITS)
    for i in range(args.batch):
        engine.submit([1000 + i] * args.context, SamplingParams(max_tokens=500, min_tokens=500), lambda e: True)
    for _ in range(10):  # prefill (several steps when batch x context > max_num_batched_tokens), then decode
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    total = sum(e.device_time_total for e in prof.key_averages()) / 1000 / args.steps
    print(f"batch {args.batch} context {args.context}: {total:.2f} ms of kernels per step")


if __name__ == "__main__":
    main()
