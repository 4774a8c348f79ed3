"""One Qwen-7B o_proj-shape layer (4096 x 4096) on this CPU: the quantized linear op the CPU op set picks
(models/ops.py: torch's int8 / int4 weight-only kernels, on the layout made at load), beside the dequantizing
reference it replaced and the dense layer in the same dtype, at decode and prefill row counts. Writes
benchmarks/results/cpu_quant_linear.json. Measures and records; asserts nothing."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qwen_triton.models import ops
from qwen_triton.tools.quantize import quantize_int4, quantize_int8

N = K = 4096
ROWS = (1, 4, 16, 64)


def _ms(call, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return round((time.perf_counter() - start) / repeats * 1000, 3)


def measure(dtype: torch.dtype, precision: str, repeats: int) -> list[dict]:
    w = torch.randn(N, K, generator=torch.Generator().manual_seed(0)) * 0.02
    stored = quantize_int8(w) if precision == "int8" else quantize_int4(w, 128)
    op_set = ops.select_ops("cpu", dtype)
    prepared = op_set.prepare_int4(*stored, dtype) if precision == "int4" and op_set.prepare_int4 else {}
    op, reference = getattr(op_set, f"linear_{precision}"), getattr(ops.TORCH_OPS, f"linear_{precision}")
    dense = w.to(dtype)
    rows = []
    for m in ROWS:
        x = torch.randn(m, K).to(dtype)
        rows.append({"dtype": str(dtype).removeprefix("torch."), "precision": precision, "rows": m,
                     "op": op.__name__, "op_ms": _ms(lambda: op(x, *stored, None, **prepared), repeats),
                     "dequantize_reference_ms": _ms(lambda: reference(x, *stored), repeats),
                     "dense_ms": _ms(lambda: F.linear(x, dense), repeats)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/cpu_quant_linear.json")
    args = parser.parse_args(argv)
    with torch.inference_mode():
        results = [row for dtype in (torch.float32, torch.bfloat16) for precision in ("int8", "int4")
                   for row in measure(dtype, precision, args.repeats)]
    report = {"command": "python -m benchmarks.cpu_quant_linear", "machine": f"{platform.machine()}, "
              f"{len(os.sched_getaffinity(0))} cores, torch {torch.__version__}", "shape": [N, K],
              "int4_group_size": 128, "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
