"""Weight read rate of Qwen-7B's decode linear layers at small batch: cuBLAS (F.linear) against the split-K
Triton GEMV (models/gemv.py) over a sweep of launches. Each call reads a different copy of the weight (more
copies than the L2 holds) and calls are replayed from one CUDA graph, as in a decode step. Diagnostic: one
JSON line per (shape, batch, variant), then the best launch per shape and batch."""
from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from qwen_triton.models import gemv

from .timing import graph_ms

SHAPES = {"qkv_proj": (12288, 4096), "o_proj": (4096, 4096), "gate_up_proj": (22016, 4096),
          "down_proj": (4096, 11008), "lm_head": (151936, 4096)}
LAUNCHES = [(bn, bk, s, w) for bn, bk in ((4, 1024), (8, 256), (8, 512), (8, 1024), (16, 256), (16, 512), (32, 128),
                                          (32, 256), (64, 128))
            for s in (1, 2, 4, 8) for w in (4, 8) if bn * bk <= 1024 * w]


def _measure(name, n, k, batch, launches, min_bytes):
    copies = max(2, -(-min_bytes // (n * k * 2)))
    weights = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(copies)]
    x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
    ref = F.linear(x, weights[0]).float()
    nbytes = n * k * 2
    rows = []
    # tl.dot (batch > 1) needs 16-wide tiles
    variants = [("cublas", None)] + [("triton", launch) for launch in launches if batch == 1 or launch[0] >= 16]
    for kind, launch in variants:
        if kind == "cublas":
            calls = [lambda w=w: F.linear(x, w) for w in weights]
            err = 0.0
        else:
            try:
                err = (gemv.linear(x, weights[0], launch=launch).float() - ref).abs().max().item()
            except gemv.triton.runtime.errors.OutOfResources:  # tiles too large for shared memory at this batch
                continue
            calls = [lambda w=w: gemv.linear(x, w, launch=launch) for w in weights]
        ms = graph_ms(calls)
        rows.append({"shape": name, "batch": batch, "variant": kind, "launch": launch, "us": round(ms * 1000, 2),
                     "tb_s": round(nbytes / ms / 1e9, 3), "max_err": err})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--min-bytes", type=int, default=1 << 30, help="weight copies per shape (beyond the L2)")
    args = parser.parse_args(argv)
    best = []
    for name, batch in itertools.product(args.shapes, args.batch):
        rows = _measure(name, *SHAPES[name], batch, LAUNCHES, args.min_bytes)
        cublas = rows[0]
        fastest = min(rows[1:], key=lambda r: r["us"])
        best.append({"shape": name, "batch": batch, "cublas_us": cublas["us"], "triton_us": fastest["us"],
                     "launch": fastest["launch"], "cublas_tb_s": cublas["tb_s"], "triton_tb_s": fastest["tb_s"]})
        torch.cuda.empty_cache()
    for row in best:
        print("BEST " + json.dumps(row))


if __name__ == "__main__":
    main()
