"""Weight-only quantized linear layers on CUDA (layout: models/quant_linear.py; launches and paths:
models/quant_launch.py). Decode steps (up to gemv.MAX_ROWS rows of x) run a split-K GEMV that reads the packed
weight and dequantizes it in registers, so a step streams 1 (int8) or 1/2 (int4) byte per weight instead of 2.
Wider calls (prefill, large mixed steps) are compute-bound and run one of two paths, by rows (FUSED_ROWS): the
same kernels tiled over rows of x as well, a GEMM that dequantizes each weight tile in registers (tensor-core
tiles of Triton's making, not cuBLAS's); or, wider, the weight dequantized once into x's dtype (one pass: read 1
or 1/2 byte, write 2) and cuBLAS.

Each program sums BLOCK_K-wide slices of BLOCK_N weight rows over its split of K in float32, as gemv.py does.
int8: the per-row scale is applied to each split's sum (sum_k x q * s == s * sum_k x q); one row runs float32
FMAs, 2 or more tensor-core tiles. int4 runs tensor-core tiles, at one row too (BLOCK_M 16, 15 rows masked),
except one float16 row at a group that is a multiple of 128, which models/row_gemv.py takes
(quant_launch.ROW_LAUNCHES: its half-precision PTX was faster at every Qwen-7B shape on the H100). A tile lies
inside one group (BLOCK_K divides it; _launch refuses a launch where it does not), so its zeros and scales are
loaded once per row: a tile spanning groups gathered a scale per weight, and at 2-64 rows that form of the
kernel gave NaN or an illegal memory access on an H100 (Triton 3.6; docs/quantization.md). The tile enters the
tensor cores as q - zero, exact in half precision, and the group's scale multiplies its float32 sums. Bytes and
nibbles become floats by placing them in a float's mantissa, not by conversion instructions, which run at a
quarter of the rate of the arithmetic around them; for int4, by a few lines of PTX (_nibbles)."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import gemv, row_gemv
from .quant_launch import (FUSED_ROWS, INT4_MIN_BLOCK_K, choose_launch, full_launch, gemm_launch, int4_block_k,
                           row_launch)


try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None
else:
    # Triton's interpreter (the CPU tests) cannot run PTX: there the nibbles are unpacked in plain Triton.
    INT4_ASM = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")
    # $4: four bytes (elements 0-3) -> $0, $1: their low nibbles as M + q halves, elements (0, 1) and (2, 3);
    # $2, $3: their high nibbles. prmt spreads bytes 0, 1 (and 2, 3) to the two halves of a word; lop3 0xEA
    # is (a & b) | c.
    _NIBBLES_PTX = ("{ .reg .b32 t0, t1, z; mov.b32 z, 0;"
                    " prmt.b32 t0, $4, z, 0x4140; prmt.b32 t1, $4, z, 0x4342;"
                    " lop3.b32 $0, t0, 0x000F000F, MAGIC, 0xEA; lop3.b32 $1, t1, 0x000F000F, MAGIC, 0xEA;"
                    " shr.b32 t0, t0, 4; shr.b32 t1, t1, 4;"
                    " lop3.b32 $2, t0, 0x000F000F, MAGIC, 0xEA; lop3.b32 $3, t1, 0x000F000F, MAGIC, 0xEA; }")
    NIBBLES_F16 = tl.constexpr(_NIBBLES_PTX.replace("MAGIC", "0x64006400"))  # M = 1024: 0x6400 in float16
    NIBBLES_BF16 = tl.constexpr(_NIBBLES_PTX.replace("MAGIC", "0x43004300"))  # M = 128: 0x4300 in bfloat16


if triton is not None:

    @triton.jit
    def _int8_gemv_kernel(x_ptr, q_ptr, scale_ptr, bias_ptr, out_ptr, parts_ptr, count_ptr, M, N, K, x_stride,
                          k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr,
                          W_FIRST: tl.constexpr = False, FP8: tl.constexpr = False):
        # out[m, n] = scale[n] * sum over k of x[m, k] * q[n, k] (+ bias[n]); this program sums its split of K
        # (gemv.store_tile).
        # W_FIRST: the tensor-core tiles take the weight as the MMA's first operand (W x^T, straight from the
        # registers it is converted in; x^T second, from shared memory) and transpose the sums once at the end.
        # FP8: q holds e4m3 bit patterns (read as uint8) instead of int8 values. Converted in a static `if` in
        # the body: Triton's compiler (not its interpreter) refuses a helper whose returns differ in type.
        pdl.wait_then_release(PDL)
        rn, rm, k_start, k_end = _tile(K, k_per_split, BLOCK_M, BLOCK_N)
        q_rows = q_ptr + rn[:, None].to(tl.int64) * K  # (BLOCK_N, 1)
        n_live = rn < N
        if BLOCK_M == 1:
            acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
            for k in range(k_start, k_end, BLOCK_K):
                rk = k + tl.arange(0, BLOCK_K)
                k_live = rk < k_end
                q = tl.load(q_rows + rk[None, :], mask=n_live[:, None] & k_live[None, :], other=0)
                if FP8:  # e4m3 bit patterns as the float8 numbers they encode (exact in float32)
                    w = q.to(tl.float8e4nv, bitcast=True).to(tl.float32)
                else:  # the float32 2^23 + (q + 128): the byte q ^ 0x80 as its mantissa; minus 2^23 + 128
                    w = (q.to(tl.uint8, bitcast=True).to(tl.uint32) ^ 0x4B000080).to(tl.float32, bitcast=True)
                    w -= 8388736.0
                x = tl.load(x_ptr + rk, mask=k_live, other=0.0)
                acc += w * x.to(tl.float32)[None, :]
            total = tl.sum(acc, axis=1)[None, :]  # (1, BLOCK_N)
        else:
            acc = _zero_acc(BLOCK_M, BLOCK_N, W_FIRST)
            for k in range(k_start, k_end, BLOCK_K):
                rk = k + tl.arange(0, BLOCK_K)
                k_live = rk < k_end
                q = tl.load(q_rows + rk[None, :], mask=n_live[:, None] & k_live[None, :], other=0)
                x = tl.load(x_ptr + rm[:, None] * x_stride + rk[None, :], mask=(rm[:, None] < M) & k_live[None, :],
                            other=0.0)
                # int8 and e4m3 values are exact in half precision: the tensor cores see the stored values.
                if FP8:
                    w = q.to(tl.float8e4nv, bitcast=True).to(x.dtype)
                else:
                    w = _int8_as(q, x.dtype)
                if W_FIRST:
                    acc = tl.dot(w, tl.trans(x), acc)  # (BLOCK_N, BLOCK_M)
                else:
                    acc = tl.dot(x, tl.trans(w), acc)  # (BLOCK_M, BLOCK_N)
            total = _rows_first(acc, W_FIRST)
        total *= tl.load(scale_ptr + rn, mask=n_live, other=0.0)[None, :]
        gemv.store_tile(total, bias_ptr, out_ptr, parts_ptr, count_ptr, rm, rn, M, N, SPLITS, HAS_BIAS)

    @triton.jit
    def _int8_as(q, dtype: tl.constexpr):
        """int8 values -> dtype, exact. float16: the byte q + 128 as the mantissa of 1024 + (q + 128), minus 1152
        (no conversion instruction); bfloat16's 7-bit mantissa cannot hold a byte, so a conversion there."""
        if dtype == tl.float16:
            w = (q.to(tl.uint8, bitcast=True).to(tl.uint16) ^ 0x6480).to(tl.float16, bitcast=True) - 1152.0
        else:
            w = q.to(dtype)
        return w

    @triton.jit
    def _zero_acc(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, W_FIRST: tl.constexpr):
        """The tensor-core tiles' float32 sums: (BLOCK_N, BLOCK_M) with the weight first, else (BLOCK_M, BLOCK_N)."""
        if W_FIRST:
            acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        return acc

    @triton.jit
    def _rows_first(acc, W_FIRST: tl.constexpr):
        """The sums as (BLOCK_M, BLOCK_N): transposed once, after the loop, when the weight went first."""
        if W_FIRST:
            acc = tl.trans(acc)
        return acc

    @triton.jit
    def _tile(K, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """This program's output columns rn, rows rm (one block of rows unless the GEMM tiles M) and its split's
        columns of K [k_start, k_end)."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = tl.program_id(1) * k_per_split
        return rn, rm, k_start, tl.minimum(k_start + k_per_split, K)

    @triton.jit
    def _nibbles(packed, dtype: tl.constexpr):
        """packed (BLOCK_N, HALF_K) uint8 -> (low, high) nibbles in dtype, each as M + q with M = 1024 (float16)
        or 128 (bfloat16): the nibble placed in the mantissa of M, where the float's last bit weighs 1. With
        INT4_ASM, per four bytes two byte permutes, two shifts and four logic ops make eight such halves in
        pairs, the form the tensor cores take; in plain Triton the compiler spends about twice that."""
        if INT4_ASM:
            if dtype == tl.float16:
                low, high = tl.inline_asm_elementwise(
                    NIBBLES_F16, "=r,=r,=r,=r,r", [packed],
                    dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
            else:
                low, high = tl.inline_asm_elementwise(
                    NIBBLES_BF16, "=r,=r,=r,=r,r", [packed],
                    dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        else:
            magic: tl.constexpr = 0x6400 if dtype == tl.float16 else 0x4300
            wide = packed.to(tl.uint16)
            low = ((wide & 0x0F) | magic).to(dtype, bitcast=True)
            high = ((wide >> 4) | magic).to(dtype, bitcast=True)
        return low, high

    @triton.jit
    def _int4_tile(q_rows, zero_rows, k, n_live, GROUP: tl.constexpr, HALF_K: tl.constexpr, dtype: tl.constexpr):
        """Columns [k, k + 2 HALF_K) of BLOCK_N rows as q - zero in dtype, (BLOCK_N, 2 HALF_K), in column order
        for the tensor cores: exact (integers in [-15, 15]); the caller applies the scale to the tile's float32
        sums. The tile lies inside one group (_launch checks that 2 HALF_K divides GROUP), so its zeros (and
        scales) are one load per row; and it is whole (GROUP divides K), so nothing is masked along K."""
        kb = k // 2 + tl.arange(0, HALF_K)
        packed = tl.load(q_rows + kb[None, :], mask=n_live[:, None], other=0)  # (BLOCK_N, HALF_K) uint8
        zero = tl.load(zero_rows + k // GROUP, mask=n_live[:, None], other=0)  # (BLOCK_N, 1)
        zero = _nibbles(zero, dtype)[0]  # M + zero, as the nibbles are made
        low, high = _nibbles(packed, dtype)
        return tl.interleave(low - zero, high - zero)

    @triton.jit
    def _int4_gemv_kernel(x_ptr, q_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, parts_ptr, count_ptr, M, N, K,
                          x_stride, k_per_split, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          SPLITS: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr,
                          W_FIRST: tl.constexpr = False):
        # out[m, n] = sum over k of x[m, k] * (q[n, k] - zero[n, k // G]) * scale[n, k // G] (+ bias[n]), this
        # program's split of K (gemv.store_tile)
        # W_FIRST: as in _int8_gemv_kernel.
        pdl.wait_then_release(PDL)
        rn, rm, k_start, k_end = _tile(K, k_per_split, BLOCK_M, BLOCK_N)
        n_live = rn < N
        groups = K // GROUP
        q_rows = q_ptr + rn[:, None].to(tl.int64) * (K // 2)  # (BLOCK_N, 1)
        scale_rows = scale_ptr + rn[:, None].to(tl.int64) * groups
        zero_rows = zero_ptr + rn[:, None].to(tl.int64) * groups
        acc = _zero_acc(BLOCK_M, BLOCK_N, W_FIRST)
        m_live = (rm < M)[:, None]
        for k in range(k_start, k_end, BLOCK_K):  # whole tiles, each inside one group (_int4_tile)
            w = _int4_tile(q_rows, zero_rows, k, n_live, GROUP, BLOCK_K // 2, x_ptr.dtype.element_ty)
            scale = tl.load(scale_rows + k // GROUP, mask=n_live[:, None], other=0.0)  # (BLOCK_N, 1)
            x = tl.load(x_ptr + rm[:, None] * x_stride + (k + tl.arange(0, BLOCK_K))[None, :], mask=m_live,
                        other=0.0)
            # The group's scale once, on the tile's float32 sums.
            if W_FIRST:
                acc += tl.dot(w, tl.trans(x)) * scale  # (BLOCK_N, BLOCK_M)
            else:
                acc += tl.dot(x, tl.trans(w)) * tl.trans(scale)  # (BLOCK_M, BLOCK_N)
        total = _rows_first(acc, W_FIRST)
        gemv.store_tile(total, bias_ptr, out_ptr, parts_ptr, count_ptr, rm, rn, M, N, SPLITS, HAS_BIAS)

    @triton.jit
    def _dequantize_kernel(q_ptr, scale_ptr, zero_ptr, w_ptr, N, K, INT4: tl.constexpr, GROUP: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
        # w[n, k] in w's dtype: q[n, k] * scale[n] (int8) or (q[n, k] - zero[n, k // G]) * scale[n, k // G] (int4),
        # computed in float32 and rounded once, as quant_linear.dequantize_int8/int4 do
        pdl.wait_then_release(PDL)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        live = (rn < N)[:, None] & (rk < K)[None, :]
        rows = rn[:, None].to(tl.int64)
        if INT4:  # a tile inside one group (BLOCK_K divides it), whole along K: as the GEMM reads it
            groups = K // GROUP
            k = tl.program_id(1) * BLOCK_K
            w = _int4_tile(q_ptr + rows * (K // 2), zero_ptr + rows * groups, k, rn < N, GROUP, BLOCK_K // 2,
                           w_ptr.dtype.element_ty).to(tl.float32)  # q - zero, exact
            w *= tl.load(scale_ptr + rows * groups + k // GROUP, mask=(rn < N)[:, None], other=0.0)
        else:
            q = tl.load(q_ptr + rows * K + rk[None, :], mask=live, other=0).to(tl.float32)
            w = q * tl.load(scale_ptr + rn, mask=rn < N, other=0.0)[:, None]
        tl.store(w_ptr + rows * K + rk[None, :], w.to(w_ptr.dtype.element_ty), mask=live)


def _launch(kernel, x, weights: tuple, group: int | None, bias, N: int, precision: str,
            launch: tuple | None) -> torch.Tensor:
    """launch: see full_launch; M tiled by BLOCK_M (one block at decode rows, several in the fused GEMM), or
    (BLOCK_N, BLOCK_K, splits, warps) with one block of rows (M <= gemv.MAX_ROWS)."""
    M, K = x.shape
    *launch, weight_first = full_launch(M, precision, launch or choose_launch(M, N, K, precision, group))
    if precision == "int4" and (group % launch[2] or launch[2] < INT4_MIN_BLOCK_K):
        raise ValueError(f"int4 needs BLOCK_K dividing the group size {group} (and at least {INT4_MIN_BLOCK_K} for "
                         f"its tensor-core tiles), got {launch[2]}")
    extra = {"FP8": True} if precision == "fp8" else {} if group is None else {"GROUP": group}
    return gemv.split_k(kernel, x, weights, bias, N, tuple(launch), W_FIRST=weight_first, **extra)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, K: int,
               dtype: torch.dtype) -> torch.Tensor:
    """The (N, K) weight in dtype, made on the device in one pass (int4 when zeros is given; its group a multiple
    of INT4_MIN_BLOCK_K, as on the GEMM's path)."""
    N = qweight.shape[0]
    w = torch.empty((N, K), dtype=dtype, device=qweight.device)
    group = K // scales.shape[1] if zeros is not None else K
    block_n, block_k = (32, int4_block_k(128, group)) if zeros is not None else (16, 128)
    _dequantize_kernel[(triton.cdiv(N, block_n), triton.cdiv(K, block_k))](
        qweight, scales, zeros if zeros is not None else scales, w, N, K, INT4=zeros is not None, GROUP=group,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, **pdl.launch_kwargs(qweight.device))
    return w


def linear_int8(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
                launch: tuple[int, ...] | None = None) -> torch.Tensor:
    """x (M, K) unit stride along K, half precision; qweight int8 (N, K), scales float32 (N,) -> (M, N)."""
    N, K = qweight.shape
    row = launch is None and row_launch(x.shape[0], N, K, "int8", x.dtype == torch.float16)
    if row:
        return row_gemv.linear("int8", x, qweight, scales, None, bias, row)
    if x.shape[0] > gemv.MAX_ROWS and launch is None:
        if x.shape[0] > FUSED_ROWS["int8"]:
            return F.linear(x, dequantize(qweight, scales, None, K, x.dtype), bias)
        launch = gemm_launch("int8")
    return _launch(_int8_gemv_kernel, x, (qweight, scales), None, bias, N, "int8", launch)


def linear_fp8_weight(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
                      launch: tuple[int, ...] | None = None) -> torch.Tensor:
    """W8A16 on the fp8 layout: x (M, K) half precision; qweight float8_e4m3fn (N, K), scales float32 (N,) ->
    (M, N). The int8 GEMV (past gemv.MAX_ROWS rows its fused GEMM) reading e4m3 bytes: one byte per weight,
    activations kept 16-bit (no per-token quantization: a decode row would pay more for it than the matmul).
    Compute capability 8.9+."""
    N, K = qweight.shape
    row = launch is None and row_launch(x.shape[0], N, K, "fp8", x.dtype == torch.float16)
    if row:
        return row_gemv.linear("fp8", x, qweight.view(torch.uint8), scales, None, bias, row)
    if x.shape[0] > gemv.MAX_ROWS and launch is None:
        launch = gemm_launch("fp8")
    return _launch(_int8_gemv_kernel, x, (qweight.view(torch.uint8), scales), None, bias, N, "fp8", launch)


def linear_int4(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                bias: torch.Tensor | None = None, launch: tuple[int, ...] | None = None) -> torch.Tensor:
    """x (M, K) unit stride along K, half precision; qweight uint8 (N, K/2), scales float32 and zeros uint8
    (N, K/g) -> (M, N). On the kernels g must be a multiple of INT4_MIN_BLOCK_K (runtime/loader.py checks it)."""
    N, K = qweight.shape[0], x.shape[1]
    group = K // scales.shape[1]
    row = launch is None and row_launch(x.shape[0], N, K, "int4", x.dtype == torch.float16, group)
    if row:
        return row_gemv.linear("int4", x, qweight, scales, zeros, bias, row)
    if x.shape[0] > gemv.MAX_ROWS and launch is None:
        if x.shape[0] > FUSED_ROWS["int4"]:
            return F.linear(x, dequantize(qweight, scales, zeros, K, x.dtype), bias)
        launch = gemm_launch("int4", group)
    return _launch(_int4_gemv_kernel, x, (qweight, scales, zeros), group, bias, N, "int4", launch)
