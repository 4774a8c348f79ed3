"""The launch policy of models/quant_gemv.py's kernels: which path and which launch each call takes, by mode, rows
and layer shape. Launches are (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first): rows and weight rows per
program, the K slice per loop step, programs along K, warps, and whether the tensor-core tiles take the weight as
the MMA's first operand. The numbers are the fastest of benchmarks/quant_gemv.py's sweeps on the H100."""
from __future__ import annotations

import os

from . import gemv

# Past gemv.MAX_ROWS rows (prefill, mixed steps), calls of up to FUSED_ROWS[precision] rows run the fused GEMM and
# wider ones dequantize + cuBLAS (fp8 runs W8A8 there, ops.small_batch_fp8_linear): the faster of the two at Qwen-7B's
# shapes on the H100 at 128, 300 and 512 rows (benchmarks/results/quant_gemv_order_prefill_h100.jsonl).
# QWEN_TRITON_QUANT_PREFILL=fused or dequantize forces one.
FUSED_ROWS = {"int8": 300, "int4": 128}
_PREFILL_SET = os.environ.get("QWEN_TRITON_QUANT_PREFILL")
if _PREFILL_SET:
    if _PREFILL_SET not in ("dequantize", "fused"):
        raise ValueError(f"QWEN_TRITON_QUANT_PREFILL must be dequantize or fused, got {_PREFILL_SET!r}")
    FUSED_ROWS = dict.fromkeys(FUSED_ROWS, 1 << 62 if _PREFILL_SET == "fused" else gemv.MAX_ROWS)
# The fused GEMM's (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first), from the same sweep.
GEMM_LAUNCHES = {"int8": (128, 128, 64, 1, 4, True), "int4": (64, 64, 64, 1, 4, True),
                 "fp8": (128, 128, 64, 1, 8, True)}
# The row blocks (BLOCK_M) whose decode tiles take the weight first (W_FIRST in the kernels; choose_launch then
# makes BLOCK_N at least 64), from the same sweeps.
WEIGHT_FIRST_BLOCKS = {"int8": (32, 64), "fp8": (32, 64), "int4": (32, 64)}
# One row of x, int8 and fp8 (float32 FMAs): (BLOCK_N, BLOCK_K, splits, warps) for the narrow outputs (N <= 4096:
# o_proj, down_proj) and the wide ones, from the same sweeps.
ONE_ROW_LAUNCHES = {"int8": {"narrow": (8, 1024, 1, 8), "wide": (16, 256, 1, 4)},
                    "fp8": {"narrow": (4, 1024, 1, 4), "wide": (4, 1024, 1, 4)}}
# One row of a float16 x through models/row_gemv.py (half-precision FMAs in PTX), by mode: (BLOCK_N, BLOCK_K, splits,
# warps) for the narrow and the wide outputs. int4 at both; int8 and fp8 at the wide ones only, where row_gemv's
# forms of them beat their float32 FMAs (the narrow ones keep the FMAs, which row_gemv did not beat). From
# benchmarks/quant_gemv.py --wide (benchmarks/results/quant_row_h100.jsonl, quant_row_int8_fp8_h100.jsonl).
ROW_LAUNCHES = {"int4": {"narrow": (64, 128, 8, 8), "wide": (64, 128, 4, 4)},
                "int8": {"wide": (8, 1024, 1, 4)}, "fp8": {"wide": (16, 512, 1, 8)}}
# fp8 calls of at least this many rows (and up to gemv.MAX_ROWS) run W8A8 through fp8_gemm.linear_rows, fewer the
# e4m3 weight with 16-bit x (quant_gemv.linear_fp8_weight); past gemv.MAX_ROWS fp8_gemm.linear. The fewest rows
# from which W8A8 was the faster over the four layers in benchmarks/quant_gemv.py's w8a8_rows sweep
# (benchmarks/results/fp8_w8a8_rows_h200.jsonl, an H200). QWEN_TRITON_FP8_W8A8_ROWS moves it (an A/B switch for the
# benchmarks: 65 keeps W8A16 at every decode row).
FP8_W8A8_ROWS = int(os.environ.get("QWEN_TRITON_FP8_W8A8_ROWS", "32"))
# The narrowest BLOCK_K of int4's tensor-core tiles (the narrowest the GPU tests run, at group 32): an int4 tile
# lies inside one group, so on the kernels the group size must be a multiple of it (the loader checks).
INT4_MIN_BLOCK_K = 32


def int4_block_k(block_k: int, group: int) -> int:
    """The largest BLOCK_K <= block_k (a power of two) that divides the group: an int4 tile then lies inside one
    group."""
    while group % block_k:
        block_k //= 2
    return block_k


def int4_launch(launch: tuple, group: int) -> tuple:
    """launch ((BLOCK_M,) BLOCK_N, BLOCK_K, splits, warps(, weight_first)) with its BLOCK_K made to divide int4's
    group."""
    i = 2 if len(launch) >= 5 else 1
    return (*launch[:i], int4_block_k(launch[i], group), *launch[i + 1:])


def gemm_launch(precision: str, group: int | None = None) -> tuple:
    """The fused GEMM's launch for int8, fp8 or int4 (its BLOCK_K made to divide int4's group)."""
    launch = GEMM_LAUNCHES[precision]
    return int4_launch(launch, group) if precision == "int4" else launch


def choose_launch(M: int, N: int, K: int, precision: str, group: int | None = None) -> tuple:
    """(BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first) for M <= gemv.MAX_ROWS; group: int4's (None: one
    per row, K). The fastest of benchmarks/quant_gemv.py's sweep at Qwen-7B's shapes on the H100
    (benchmarks/results/quant_gemv_decode_h100.jsonl; the operand order from 17 rows:
    benchmarks/results/quant_gemv_order_decode_h100.jsonl). int4 at one row takes the tensor-core tile of 16
    rows, 15 of them masked, which beat the float32 FMAs at every shape (a float16 row where row_launch applies
    goes to models/row_gemv.py instead); int8 and fp8 keep the FMAs there (the two forms within 5%)."""
    block_m, block_n, block_k, splits, warps = _choose(M, N, K, precision, group)
    if block_m not in WEIGHT_FIRST_BLOCKS[precision]:
        return block_m, block_n, block_k, splits, warps, False
    if precision != "int4":  # int8, fp8: K unsplit for the widest output (gate_up_proj), else split in 2
        splits = 1 if N > 16384 else 2
    return block_m, max(block_n, 64), block_k, splits, warps, True  # at least the 64 rows of Hopper's wgmma


def _choose(M: int, N: int, K: int, precision: str, group: int | None) -> tuple:
    block_n, block_k, splits, warps = gemv.choose_launch(M, N, K)
    if precision == "int4":
        block_k = int4_block_k(128, group or K)
        if M == 1:
            return 16, 64, block_k, 8 if K > 8192 else 2 if 8192 < N <= 16384 else 4, 4
        if M <= 16:
            return gemv.one_block_m(M), 32, block_k, 4, 4
        if M <= 32:
            return (32, 32, block_k, 1, 4) if N > 4096 else (32, 64, block_k, 4, 8)
        return 64, 64, block_k, 1 if N > 16384 else 2, 4
    if M == 1:
        return 1, *ONE_ROW_LAUNCHES[precision]["narrow" if N <= 4096 else "wide"]
    return gemv.one_block_m(M), block_n, 128, splits, warps


def row_launch(M: int, N: int, K: int, precision: str, float16: bool, group: int | None = None) -> tuple | None:
    """models/row_gemv.py's launch for one float16 row where ROW_LAUNCHES has the mode and its BLOCK_K divides K
    and int4's group (the kernel reads whole tiles), else None."""
    launch = ROW_LAUNCHES.get(precision, {}).get("narrow" if N <= 4096 else "wide")
    if M != 1 or not float16 or not launch:
        return None
    return launch if K % launch[1] == 0 and (group or K) % launch[1] == 0 else None


def full_launch(M: int, precision: str, launch: tuple) -> tuple:
    """launch as (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first): a 4-tuple (BLOCK_N, BLOCK_K, splits,
    warps) gets one block of M rows (int4, which has no one-row form, a tensor-core tile of at least 16); a
    launch without weight_first gets its default (WEIGHT_FIRST_BLOCKS)."""
    if len(launch) == 4:
        launch = (max(16, gemv.one_block_m(M)) if precision == "int4" else gemv.one_block_m(M), *launch)
    if len(launch) == 5:
        launch = (*launch, launch[0] in WEIGHT_FIRST_BLOCKS[precision])
    return tuple(launch)
