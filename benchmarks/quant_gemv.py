"""Time of Qwen-7B's linear layers with quantized weights (models/quant_gemv.py): at decode batches the GEMV over
a sweep of launches, beside cuBLAS on the 16-bit weight (the baseline a quantized engine must beat); past 64 rows
(prefill, --batch 512) the two prefill paths, dequantize + cuBLAS and the fused GEMM over a few tiles. As
benchmarks/gemv.py: each call reads a different copy of the weights (more copies than the L2 holds), calls
replayed from one CUDA graph. Diagnostic: one JSON line per (mode, shape, batch, variant), then the best
launch per mode, shape and batch (what quant_launch.choose_launch should pick). At one row the sweep has both of
the GEMV's forms: the float32 FMAs of one row (int8, fp8) and the tensor-core tile of 16 rows, 15 of them
masked (launches recorded whole: quant_launch.full_launch). Every tensor-core launch runs with x first and with
the weight first in the MMA. fp8 also runs W8A8 (x quantized per token by fp8_quant's kernel, rows padded as the
runtime pads them, then torch._scaled_mm) at every batch, and with torch's own ops quantizing, and past 64 rows
the fused GEMM on its e4m3 weight (W8A16) and the Triton W8A8 GEMM (models/fp8_gemm.py, variant w8a8_triton); at
decode batches its rows kernel (linear_rows, variant w8a8_rows) over a sweep of launches.
--wide times one row: the default launches against models/row_gemv.py's (variant row). --row-pipeline times one
row as the runtime runs it (variant default) against row_gemv's launches in use with the loop's loads pipelined 1-4
stages deep, the next tile prefetched or not, and for int4 its scales and zeros group-major (row_group_major).
--variants keeps only the kinds named; --jobs compiles every launch first in that many processes."""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing

import torch
import torch.nn.functional as F

from qwen_triton.models import fp8_gemm, fp8_quant, gemv, ops, quant_gemv, quant_launch, row_gemv
from qwen_triton.tools.quantize import dequantize_fp8, quantize_fp8, quantize_int4, quantize_int8

from .gemv import LAUNCHES, SHAPES
from .timing import graph_ms

# The fused prefill GEMM's tiles (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first), quant_launch.GEMM_LAUNCHES
# among them; each with x first and with the weight first in the MMA.
GEMM_LAUNCHES = [(bm, bn, bk, 1, w, first) for bm in (64, 128, 256) for bn in (64, 128) for bk in (64, 128)
                 for w in (4, 8) for first in (False, True)]
# fp8's W8A8 GEMM in Triton (models/fp8_gemm.py): (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages).
FP8_GEMM_LAUNCHES = [(bm, bn, 128, w, st) for bm, bn in ((64, 128), (64, 256), (128, 64), (128, 128), (128, 256))
                     for w in (4, 8) for st in (3, 4)]
# fp8's W8A8 at decode rows (models/fp8_gemm.py linear_rows): (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, stages),
# BLOCK_M the smallest of 16, 32 and 64 that holds the batch.
def fp8_rows_launches(batch: int) -> list[tuple[int, ...]]:
    block_m = next(b for b in (16, 32, 64) if batch <= b)
    return [(block_m, bn, bk, s, w, st) for bn in (64, 128) for bk in (128, 256) for s in (1, 2, 4)
            for w in ((4, 8) if bn == 128 else (4,)) for st in (3, 5)]


# One row through the tensor-core tile (BLOCK_M 16, rows 2-16 masked).
DOT_LAUNCHES = [(16, bn, bk, s, w) for bn in (32, 64, 128) for bk in (64, 128, 256) for s in (1, 2, 4, 8)
                for w in (4, 8) if bn * bk <= 8192 * w // 4]
# One row through models/row_gemv.py (half-precision FMAs in PTX, float16 x): (BLOCK_N, BLOCK_K, splits, warps),
# 16 to 128 weights a thread; int4's BLOCK_K 128 (its tiles lie inside a group of 128).
ROW_SWEEP = {"int4": [(bn, 128, s, w) for bn in (16, 32, 64, 128) for s in (1, 2, 4, 8) for w in (2, 4, 8)
                      if 16 <= bn * 128 // (32 * w) <= 128]}
# row_gemv's launches in use (quant_launch.ROW_LAUNCHES), each with (stages, prefetch): --row-pipeline.
ROW_PIPELINE = {mode: [(*la, stages, prefetch) for la in dict.fromkeys(quant_launch.ROW_LAUNCHES[mode].values())
                       for stages in (1, 2, 3, 4) for prefetch in (False, True)] for mode in ("int4", "int8", "fp8")}
ROW_SWEEP["int8"] = ROW_SWEEP["fp8"] = [(bn, bk, s, w) for bn in (8, 16, 32, 64) for bk in (128, 256, 512, 1024)
                                        for s in (1, 2, 4) for w in (4, 8) if 16 <= bn * bk // (32 * w) <= 128]

# A launch too big for the GPU, int4's BLOCK_K not dividing its group, or a tile Triton's compiler refuses: skipped.
REFUSED = (quant_gemv.triton.runtime.errors.OutOfResources, ValueError, RuntimeError) if quant_gemv.triton else ()
OPS = {"int8": quant_gemv.linear_int8, "int4": quant_gemv.linear_int4, "fp8": quant_gemv.linear_fp8_weight}
# fp8's Triton W8A8 kernels by variant: the GEMM past 64 rows, the rows kernel at decode batches.
W8A8_TRITON = {"w8a8_triton": fp8_gemm.linear, "w8a8_rows": fp8_gemm.linear_rows}


def _group_major(stored: tuple) -> tuple:
    """int4's (q, scales, zeros) with scales and zeros stored group by group (row_gemv.linear)."""
    q, scales, zeros = stored
    return q, *row_gemv.to_group_major(scales, zeros)


def _row_op(mode: str, launch: tuple):
    """row_gemv.linear for a mode's stored weight (fp8's e4m3 read as bytes)."""
    def call(x, stored):
        q, scales, *zeros = stored
        return row_gemv.linear(mode, x, q.view(torch.uint8) if mode == "fp8" else q, scales,
                               zeros[0] if zeros else None, None, launch)
    return call


def _stored(mode: str, w: torch.Tensor) -> tuple:
    return {"int8": quantize_int8, "fp8": quantize_fp8}[mode](w) if mode != "int4" else quantize_int4(w, 128)


def _dequantized(mode: str, stored: tuple, k: int) -> torch.Tensor:
    if mode == "fp8":
        return dequantize_fp8(*stored)
    return quant_gemv.dequantize(stored[0], stored[1], stored[2] if mode == "int4" else None, k, torch.float32)


def _measure(mode, name, n, k, batch, min_bytes, quick=False, wide=False, keep=()):
    op = OPS[mode]
    stored_bytes = n * k * (0.5 if mode == "int4" else 1)
    copies = max(2, -(-min_bytes // (n * k * 2)))  # as many as the 16-bit baseline needs beyond the L2
    half = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(copies)]
    stored = [_stored(mode, w) for w in half]
    x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
    ref = F.linear(x.float(), _dequantized(mode, stored[0], k)).float()
    rows = []
    for kind, launch in _variants(mode, batch, quick, wide, keep):
        if kind == "cublas_fp16":
            calls, err = [lambda w=w: F.linear(x, w) for w in half], 0.0
        elif kind in ("scaled_mm", "scaled_mm_torch_quantize"):  # W8A8; x quantized by one kernel or torch ops
            quantize = fp8_quant.quantize_rows_padded if kind == "scaled_mm" else ops.quantize_rows_fp8
            calls = [lambda s=s: ops.fp8_linear(x, *s, quantize=quantize) for s in stored]
            err = (calls[0]().float() - ref).abs().max().item()
        elif kind in W8A8_TRITON:
            linear = W8A8_TRITON[kind]
            try:
                err = (linear(x, *stored[0], launch=launch).float() - ref).abs().max().item()
            except REFUSED:
                continue
            calls = [lambda s=s: linear(x, *s, launch=launch) for s in stored]
        elif kind == "default":  # as the runtime calls it: its own launch and path
            calls = [lambda s=s: op(x, *s) for s in stored]
            err = (calls[0]().float() - ref).abs().max().item()
        elif kind in ("row", "row_group_major"):
            row, laid = _row_op(mode, launch), stored if kind == "row" else [_group_major(s) for s in stored]
            try:
                err = (row(x, laid[0]).float() - ref).abs().max().item()
            except REFUSED:
                continue
            calls = [lambda s=s: row(x, s) for s in laid]
        elif kind == "dequantize_cublas":
            k_in = x.shape[1]
            calls = [lambda s=s: F.linear(x, quant_gemv.dequantize(s[0], s[1], s[2] if len(s) > 2 else None, k_in,
                                                                    x.dtype)) for s in stored]
            err = (calls[0]().float() - ref).abs().max().item()
        else:
            try:
                err = (op(x, *stored[0], launch=launch).float() - ref).abs().max().item()
            except REFUSED:
                continue
            calls = [lambda s=s: op(x, *s, launch=launch) for s in stored]
        ms = graph_ms(calls)
        if kind == "triton":
            launch = quant_launch.full_launch(batch, mode, launch)  # the launch as run, whole
        rows.append({"mode": mode, "shape": name, "batch": batch, "variant": kind, "launch": launch,
                     "us": round(ms * 1000, 2), "stored_tb_s": round(stored_bytes / ms / 1e9, 3), "max_err": err})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _variants(mode: str, batch: int, quick: bool = False, wide: bool = False,
              keep: tuple = ()) -> list[tuple[str, tuple | None]]:
    """_all_variants, only the kinds in keep (and the baseline) when keep is given. wide "pipeline": the
    --row-pipeline variants."""
    if wide == "pipeline":
        if batch != 1:
            raise ValueError("--row-pipeline times one row only (--batch 1)")
        variants = [("cublas_fp16", None), ("default", None)] + [("row", la) for la in ROW_PIPELINE[mode]]
        variants += [("row_group_major", la) for la in ROW_PIPELINE[mode]] if mode == "int4" else []
    else:
        variants = _all_variants(mode, batch, quick, wide)
    return [v for v in variants if not keep or v[0] in keep or v[0] == "cublas_fp16"]


def _all_variants(mode: str, batch: int, quick: bool, wide: bool) -> list[tuple[str, tuple | None]]:
    """(kind, launch) timed for a mode at a batch; cublas_fp16 first (the baseline). quick: at decode batches
    only the layers' default launches, as they are and with BLOCK_N 64, in both operand orders; past them only
    GEMM tiles with BLOCK_K 64. wide (one row): the layers' default launches and row_gemv's (ROW_SWEEP)."""
    if wide:
        if batch != 1:
            raise ValueError("--wide times one row only (--batch 1)")
        defaults = [quant_launch.choose_launch(1, n, k, mode, 128) for n, k in SHAPES.values()]
        rows = [("row", la) for la in ROW_SWEEP[mode]]
        return [("cublas_fp16", None)] + [("triton", la) for la in dict.fromkeys(defaults)] + rows
    w8a8 = [("scaled_mm", None), ("scaled_mm_torch_quantize", None)] if mode == "fp8" else []
    if mode == "fp8" and batch > gemv.MAX_ROWS:
        w8a8 += [("w8a8_triton", la) for la in FP8_GEMM_LAUNCHES]
    elif mode == "fp8":
        w8a8 += [("w8a8_rows", la) for la in fp8_rows_launches(batch)]
    fused = [("fused", la) for la in GEMM_LAUNCHES if not quick or la[2] == 64]
    if batch > gemv.MAX_ROWS and mode == "fp8":  # prefill in fp8: W8A8, or the e4m3 weight with 16-bit x
        return [("cublas_fp16", None)] + w8a8 + fused
    if batch > gemv.MAX_ROWS:  # prefill: the two paths quant_launch.FUSED_ROWS chooses between by rows
        return [("cublas_fp16", None), ("dequantize_cublas", None)] + fused
    launches = [la for la in LAUNCHES if (batch == 1 and mode != "int4") or la[0] >= 16]  # int4: no one-row form
    launches += DOT_LAUNCHES if batch < 16 else []
    if quick:  # every layer's default (they differ by shape), each timed at every shape
        defaults = [quant_launch.choose_launch(batch, n, k, mode, 128)[:5] for n, k in SHAPES.values()]
        wgmma = [(bm, 64, *rest) for bm, bn, *rest in defaults if bm >= 16 and bn < 64]  # wgmma's 64 weight rows
        launches = list(dict.fromkeys(defaults + wgmma))
    whole = [quant_launch.full_launch(batch, mode, la)[:5] for la in launches]
    both = [(*la, first) for la in whole for first in ((False, True) if la[0] >= 16 else (False,))]
    return [("cublas_fp16", None)] + [("triton", la) for la in both] + w8a8


def _compile(job: tuple) -> int:
    """Runs (so compiles and caches) every `chunks`-th launch of one (mode, K, batch) from `first`, on a small
    weight; returns how many ran."""
    mode, k, batch, first, chunks, quick, wide, keep = job
    stored = _stored(mode, torch.randn(256, k, device="cuda", dtype=torch.float16) * 0.02)
    x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
    ran = 0
    for kind, launch in _variants(mode, batch, quick, wide, keep)[first::chunks]:
        if kind in ("triton", "fused", "w8a8_triton", "w8a8_rows", "row", "row_group_major"):
            try:
                if kind in ("row", "row_group_major"):
                    _row_op(mode, launch)(x, stored if kind == "row" else _group_major(stored))
                else:
                    W8A8_TRITON.get(kind, OPS[mode])(x, *stored, launch=launch)
                ran += 1
            except REFUSED:
                pass
    torch.cuda.synchronize()
    return ran


def precompile(modes, shapes, batches, jobs: int, quick: bool = False, wide: bool = False, keep: tuple = ()) -> None:
    """Every launch compiled once, in `jobs` processes sharing Triton's on-disk cache: the launches depend on
    K, the batch and the mode, not on N (Triton specializes sizes by divisibility by 16, all of them here)."""
    keys = sorted({(mode, SHAPES[name][1], batch) for mode in modes for name in shapes for batch in batches})
    work = [(*key, first, jobs, quick, wide, keep) for key in keys for first in range(jobs)]
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        print(json.dumps({"precompiled": sum(pool.map(_compile, work))}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--min-bytes", type=int, default=1 << 30)
    parser.add_argument("--jobs", type=int, default=0, help="processes compiling every launch first (0: none)")
    parser.add_argument("--quick", action="store_true",
                        help="decode batches: the layers' default launches (and with BLOCK_N 64) in both operand "
                             "orders; past them GEMM tiles with BLOCK_K 64")
    parser.add_argument("--wide", action="store_true",
                        help="one row (--batch 1): the default launches and row_gemv's")
    parser.add_argument("--row-pipeline", action="store_true",
                        help="one row (--batch 1): the runtime's calls and row_gemv's launches in use with its "
                             "loads pipelined, prefetched, and int4's scales group-major")
    parser.add_argument("--variants", nargs="+", default=(),
                        help="only these kinds (triton, fused, dequantize_cublas, scaled_mm, "
                             "scaled_mm_torch_quantize, w8a8_triton, w8a8_rows, row, default, row_group_major); "
                             "cublas_fp16 always runs")
    args = parser.parse_args(argv)
    wide = "pipeline" if args.row_pipeline else args.wide
    if args.jobs:
        precompile(args.modes, args.shapes, args.batch, args.jobs, args.quick, wide, tuple(args.variants))
    best = []
    for mode, name, batch in itertools.product(args.modes, args.shapes, args.batch):
        rows = _measure(mode, name, *SHAPES[name], batch, args.min_bytes, args.quick, wide, tuple(args.variants))
        fastest = min(rows[1:], key=lambda r: r["us"])
        default = quant_launch.choose_launch(batch, *SHAPES[name], mode, 128) if batch <= gemv.MAX_ROWS else None
        best.append({"mode": mode, "shape": name, "batch": batch, "cublas_fp16_us": rows[0]["us"],
                     "triton_us": fastest["us"], "variant": fastest["variant"], "launch": fastest["launch"],
                     "default_launch": default,
                     "default_us": next((r["us"] for r in rows[1:] if r["launch"] and tuple(r["launch"]) == default),
                                        None)})
        torch.cuda.empty_cache()
    for row in best:
        print("BEST " + json.dumps(row))


if __name__ == "__main__":
    main()
