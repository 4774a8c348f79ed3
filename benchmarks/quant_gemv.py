"""Time of Qwen-7B's linear layers with quantized weights (models/quant_gemv.py): at decode batches the GEMV over
a sweep of launches, beside cuBLAS on the 16-bit weight (the baseline a quantized engine must beat); past 64 rows
(prefill, --batch 512) the two prefill paths, dequantize + cuBLAS and the fused GEMM over a few tiles. As
benchmarks/gemv.py: each call reads a different copy of the weights (more copies than the L2 holds), calls
replayed from one CUDA graph. Diagnostic: one JSON line per (mode, shape, batch, variant), then the best
launch per mode, shape and batch (what quant_gemv.choose_launch should pick)."""
from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from qwen_triton.models import gemv, ops, quant_gemv
from qwen_triton.tools.quantize import dequantize_fp8, quantize_fp8, quantize_int4, quantize_int8

from .gemv import LAUNCHES, SHAPES
from .timing import graph_ms

# The fused prefill GEMM's tiles (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps), quant_gemv.GEMM_LAUNCHES among them.
GEMM_LAUNCHES = [(bm, bn, bk, 1, w) for bm in (64, 128) for bn in (64, 128) for bk in (64, 128) for w in (4, 8)]


OPS = {"int8": quant_gemv.linear_int8, "int4": quant_gemv.linear_int4, "fp8": quant_gemv.linear_fp8_weight}


def _stored(mode: str, w: torch.Tensor) -> tuple:
    return {"int8": quantize_int8, "fp8": quantize_fp8}[mode](w) if mode != "int4" else quantize_int4(w, 128)


def _dequantized(mode: str, stored: tuple, k: int) -> torch.Tensor:
    if mode == "fp8":
        return dequantize_fp8(*stored)
    return quant_gemv.dequantize(stored[0], stored[1], stored[2] if mode == "int4" else None, k, torch.float32)


def _measure(mode, name, n, k, batch, min_bytes):
    op = OPS[mode]
    stored_bytes = n * k * (0.5 if mode == "int4" else 1)
    copies = max(2, -(-min_bytes // (n * k * 2)))  # as many as the 16-bit baseline needs beyond the L2
    half = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(copies)]
    stored = [_stored(mode, w) for w in half]
    x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
    ref = F.linear(x.float(), _dequantized(mode, stored[0], k)).float()
    rows = []
    if batch > gemv.MAX_ROWS and mode == "fp8":  # prefill in fp8: W8A8 through torch._scaled_mm
        variants = [("cublas_fp16", None), ("scaled_mm", None)]
    elif batch > gemv.MAX_ROWS:  # prefill: the two paths quant_gemv.PREFILL chooses between per precision
        variants = [("cublas_fp16", None), ("dequantize_cublas", None)] + [("fused", la) for la in GEMM_LAUNCHES]
    else:
        variants = [("cublas_fp16", None)] + [("triton", la) for la in LAUNCHES if batch == 1 or la[0] >= 16]
    for kind, launch in variants:
        if kind == "cublas_fp16":
            calls, err = [lambda w=w: F.linear(x, w) for w in half], 0.0
        elif kind == "scaled_mm":
            calls = [lambda s=s: ops.fp8_linear(x, *s) for s in stored]
            err = (calls[0]().float() - ref).abs().max().item()
        elif kind == "dequantize_cublas":
            k_in = x.shape[1]
            calls = [lambda s=s: F.linear(x, quant_gemv.dequantize(s[0], s[1], s[2] if len(s) > 2 else None, k_in,
                                                                    x.dtype)) for s in stored]
            err = (calls[0]().float() - ref).abs().max().item()
        else:
            try:
                err = (op(x, *stored[0], launch=launch).float() - ref).abs().max().item()
            except (quant_gemv.triton.runtime.errors.OutOfResources, ValueError):  # too big, or int4's
                continue  # BLOCK_K not dividing its group
            calls = [lambda s=s: op(x, *s, launch=launch) for s in stored]
        ms = graph_ms(calls)
        rows.append({"mode": mode, "shape": name, "batch": batch, "variant": kind, "launch": launch,
                     "us": round(ms * 1000, 2), "stored_tb_s": round(stored_bytes / ms / 1e9, 3), "max_err": err})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--min-bytes", type=int, default=1 << 30)
    args = parser.parse_args(argv)
    best = []
    for mode, name, batch in itertools.product(args.modes, args.shapes, args.batch):
        rows = _measure(mode, name, *SHAPES[name], batch, args.min_bytes)
        fastest = min(rows[1:], key=lambda r: r["us"])
        default = quant_gemv.choose_launch(batch, *SHAPES[name], mode, 128) if batch <= gemv.MAX_ROWS else None
        best.append({"mode": mode, "shape": name, "batch": batch, "cublas_fp16_us": rows[0]["us"],
                     "triton_us": fastest["us"], "launch": fastest["launch"], "default_launch": default,
                     "default_us": next((r["us"] for r in rows[1:] if tuple(r["launch"]) == default), None)})
        torch.cuda.empty_cache()
    for row in best:
        print("BEST " + json.dumps(row))


if __name__ == "__main__":
    main()
