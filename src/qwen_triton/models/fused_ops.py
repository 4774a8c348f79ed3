"""RMSNorm (with the residual add before it), RoPE and SiLU-times-up as one Triton kernel each on CUDA, in
place of 8, 5 and 2 small torch kernels per call: at batch 1 those small kernels cost about a quarter of a
decode step. Arithmetic follows the torch code they
replace (float32 statistics, products rounded to fp16/bf16); results agree with it to the last bit for most
elements and within one rounding step for the rest (tests/gpu). Eager and CUDA-graph decode use the same
kernels. Without Triton or CUDA the callers keep their torch code."""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def available(x: torch.Tensor) -> bool:
    return triton is not None and x.is_cuda


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, x_stride, n_cols, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
        x32 = x.to(tl.float32)
        normed = (x32 * tl.rsqrt(tl.sum(x32 * x32, axis=0) / n_cols + eps)).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row * n_cols + cols, w * normed.to(w.dtype), mask=mask)

    @triton.jit
    def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, x_stride, n_cols, eps, BLOCK: tl.constexpr):
        # res_out = x + res (rounded to the dtype, as torch's add); out = rms_norm(res_out) as above.
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
        r = tl.load(res_ptr + row * n_cols + cols, mask=mask, other=0.0)
        total = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(res_out_ptr + row * n_cols + cols, total, mask=mask)
        t32 = total.to(tl.float32)
        normed = (t32 * tl.rsqrt(tl.sum(t32 * t32, axis=0) / n_cols + eps)).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row * n_cols + cols, w * normed.to(w.dtype), mask=mask)

    @triton.jit
    def _silu_mul_kernel(gate_up_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
        # out = silu(gate) * up over a (T, 2 * n_cols) [gate | up] row, each op rounded as torch rounds it.
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        g = tl.load(gate_up_ptr + row * 2 * n_cols + cols, mask=mask, other=0.0)
        u = tl.load(gate_up_ptr + row * 2 * n_cols + n_cols + cols, mask=mask, other=0.0)
        g32 = g.to(tl.float32)
        silu = (g32 / (1.0 + tl.exp(-g32))).to(g.dtype)
        tl.store(out_ptr + row * n_cols + cols, (silu.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=mask)

    @triton.jit
    def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, x_stride, HEAD_DIM: tl.constexpr):
        token = tl.program_id(0)
        head = tl.program_id(1)
        heads = tl.num_programs(1)
        half = tl.arange(0, HEAD_DIM // 2)
        src = x_ptr + token * x_stride + head * HEAD_DIM
        x1 = tl.load(src + half)
        x2 = tl.load(src + HEAD_DIM // 2 + half)
        c1 = tl.load(cos_ptr + token * HEAD_DIM + half)
        c2 = tl.load(cos_ptr + token * HEAD_DIM + HEAD_DIM // 2 + half)
        s1 = tl.load(sin_ptr + token * HEAD_DIM + half)
        s2 = tl.load(sin_ptr + token * HEAD_DIM + HEAD_DIM // 2 + half)
        dst = out_ptr + (token * heads + head) * HEAD_DIM
        # x * cos + rotate_half(x) * sin with torch's roundings: each product and the sum computed in float32
        # and rounded to x's dtype (the explicit roundings also keep the compiler from contracting into an FMA).
        dt = x1.dtype
        lo = _round_sum(_round_mul(x1, c1, dt), _round_mul(-x2, s1, dt), dt)
        hi = _round_sum(_round_mul(x2, c2, dt), _round_mul(x1, s2, dt), dt)
        tl.store(dst + half, lo)
        tl.store(dst + HEAD_DIM // 2 + half, hi)

    @triton.jit
    def _round_mul(a, b, dt: tl.constexpr):
        return (a.to(tl.float32) * b.to(tl.float32)).to(dt)

    @triton.jit
    def _round_sum(a, b, dt: tl.constexpr):
        return (a.to(tl.float32) + b.to(tl.float32)).to(dt)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (T, N) with unit stride along N -> (T, N) in weight's dtype."""
    T, N = x.shape
    out = torch.empty((T, N), dtype=weight.dtype, device=x.device)
    _rms_norm_kernel[(T,)](x, weight, out, x.stride(0), N, eps, BLOCK=triton.next_power_of_2(N), num_warps=8)
    return out


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, H, D), heads contiguous (a view of the fused QKV output is fine); cos, sin (T, 1, D) -> (T, H, D)."""
    T, H, D = x.shape
    out = torch.empty((T, H, D), dtype=x.dtype, device=x.device)
    _rope_kernel[(T, H)](x, cos.contiguous(), sin.contiguous(), out, x.stride(0), HEAD_DIM=D)
    return out


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """x (T, N) unit stride along N, residual (T, N) contiguous -> (rms_norm(x + residual), x + residual)."""
    T, N = x.shape
    out = torch.empty((T, N), dtype=weight.dtype, device=x.device)
    total = torch.empty((T, N), dtype=x.dtype, device=x.device)
    _add_rms_norm_kernel[(T,)](x, residual, weight, out, total, x.stride(0), N, eps,
                               BLOCK=triton.next_power_of_2(N), num_warps=8)
    return out, total


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up (T, 2I) contiguous, rows [gate | up] -> silu(gate) * up, (T, I)."""
    T, two_i = gate_up.shape
    out = torch.empty((T, two_i // 2), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(T, triton.cdiv(two_i // 2, block))](gate_up, out, two_i // 2, BLOCK=block, num_warps=4)
    return out
