"""RMSNorm (with the residual add before it), RoPE with the KV-cache write, and SiLU-times-up as one Triton
kernel each on CUDA, in place of 8, 12 and 2 small torch kernels per call: at batch 1 a decode step is bound by
kernel launches, so fewer kernels make it shorter. Arithmetic follows the torch reference ops they replace
(models/ops.py: float32 statistics, products rounded to fp16/bf16); results agree with it to the last bit for
most elements and within one rounding step for the rest (tests/gpu/test_kernels.py). ops.select_ops picks
these for every CUDA model when Triton imports, at any dtype; eager and CUDA-graph steps use the same kernels."""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    from . import pdl
except ImportError:  # CPU-only installs
    triton = None


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, x_stride, n_cols, eps, BLOCK: tl.constexpr, PDL: tl.constexpr):
        pdl.wait_then_release(PDL)
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
        x32 = x.to(tl.float32)
        normed = (x32 * tl.rsqrt(tl.sum(x32 * x32, axis=0) / n_cols + eps)).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row * n_cols + cols, w * normed.to(w.dtype), mask=mask)

    @triton.jit
    def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, x_stride, n_cols, eps, BLOCK: tl.constexpr,
                             PDL: tl.constexpr):
        # res_out = x + res (rounded to the dtype, as torch's add); out = rms_norm(res_out) as above.
        pdl.wait_then_release(PDL)
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
    def _silu_mul_kernel(gate_up_ptr, out_ptr, n_cols, BLOCK: tl.constexpr, PDL: tl.constexpr):
        # out = silu(gate) * up over a (T, 2 * n_cols) [gate | up] row, each op rounded as torch rounds it.
        pdl.wait_then_release(PDL)
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_cols
        g = tl.load(gate_up_ptr + row * 2 * n_cols + cols, mask=mask, other=0.0)
        u = tl.load(gate_up_ptr + row * 2 * n_cols + n_cols + cols, mask=mask, other=0.0)
        g32 = g.to(tl.float32)
        silu = (g32 / (1.0 + tl.exp(-g32))).to(g.dtype)
        tl.store(out_ptr + row * n_cols + cols, (silu.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=mask)

    @triton.jit
    def _rope_write_kv_kernel(qkv_ptr, cos_ptr, sin_ptr, slots_ptr, q_ptr, k_ptr, k_cache_ptr, v_cache_ptr,
                              qkv_stride, NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                              PDL: tl.constexpr):
        # Program (token, head) rotates q's head; the first NUM_KV_HEADS of a token's programs also rotate k's head
        # and write k and v to the token's cache slot (cache rows: (slot, kv head), D wide).
        pdl.wait_then_release(PDL)
        token = tl.program_id(0)
        head = tl.program_id(1)
        half = tl.arange(0, HEAD_DIM // 2)
        trig = token * HEAD_DIM + half
        c1, c2 = tl.load(cos_ptr + trig), tl.load(cos_ptr + trig + HEAD_DIM // 2)
        s1, s2 = tl.load(sin_ptr + trig), tl.load(sin_ptr + trig + HEAD_DIM // 2)
        row = qkv_ptr + token * qkv_stride
        lo, hi = _rotate(row + head * HEAD_DIM, c1, c2, s1, s2, half, HEAD_DIM)
        _store_halves(q_ptr + (token * NUM_HEADS + head) * HEAD_DIM, lo, hi, half, HEAD_DIM)
        if head < NUM_KV_HEADS:
            lo, hi = _rotate(row + (NUM_HEADS + head) * HEAD_DIM, c1, c2, s1, s2, half, HEAD_DIM)
            _store_halves(k_ptr + (token * NUM_KV_HEADS + head) * HEAD_DIM, lo, hi, half, HEAD_DIM)
            cache_row = (tl.load(slots_ptr + token) * NUM_KV_HEADS + head) * HEAD_DIM
            _store_halves(k_cache_ptr + cache_row, lo, hi, half, HEAD_DIM)
            dims = tl.arange(0, HEAD_DIM)
            tl.store(v_cache_ptr + cache_row + dims, tl.load(row + (NUM_HEADS + NUM_KV_HEADS + head) * HEAD_DIM + dims))

    @triton.jit
    def _rotate(src, c1, c2, s1, s2, half, HEAD_DIM: tl.constexpr):
        # x * cos + rotate_half(x) * sin with torch's roundings: each product and the sum computed in float32
        # and rounded to x's dtype (the explicit roundings also keep the compiler from contracting into an FMA).
        x1 = tl.load(src + half)
        x2 = tl.load(src + HEAD_DIM // 2 + half)
        dt = x1.dtype
        lo = _round_sum(_round_mul(x1, c1, dt), _round_mul(-x2, s1, dt), dt)
        hi = _round_sum(_round_mul(x2, c2, dt), _round_mul(x1, s2, dt), dt)
        return lo, hi

    @triton.jit
    def _store_halves(dst, lo, hi, half, HEAD_DIM: tl.constexpr):
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
    _rms_norm_kernel[(T,)](x, weight, out, x.stride(0), N, eps, BLOCK=triton.next_power_of_2(N), num_warps=8,
                          **pdl.launch_kwargs(x.device))
    return out


def rope_write_kv(qkv: torch.Tensor, num_heads: int, num_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
                  slot_mapping: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor):
    """qkv (T, (H + 2 Hkv) * D) with unit stride along rows; cos, sin (T, 1, D); slot_mapping (T,); caches
    (num_blocks, block_size, Hkv, D) contiguous -> q (T, H, D) and k (T, Hkv, D) rotated, v (T, Hkv, D) a view of
    qkv; k and v are written to each token's cache slot (one kernel for what were two RoPEs and two scatters)."""
    T = qkv.shape[0]
    D = k_cache.shape[-1]
    q = torch.empty((T, num_heads, D), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty((T, num_kv_heads, D), dtype=qkv.dtype, device=qkv.device)
    _rope_write_kv_kernel[(T, num_heads)](qkv, cos.contiguous(), sin.contiguous(), slot_mapping, q, k, k_cache, v_cache,
                                          qkv.stride(0), NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=D,
                                          **pdl.launch_kwargs(qkv.device))
    return q, k, qkv[:, (num_heads + num_kv_heads) * D:].view(T, num_kv_heads, D)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """x (T, N) unit stride along N, residual (T, N) -> (rms_norm(x + residual), x + residual)."""
    T, N = x.shape
    residual = residual.contiguous()  # the kernel indexes it densely; a no-op for the model's residuals
    out = torch.empty((T, N), dtype=weight.dtype, device=x.device)
    total = torch.empty((T, N), dtype=x.dtype, device=x.device)
    _add_rms_norm_kernel[(T,)](x, residual, weight, out, total, x.stride(0), N, eps,
                               BLOCK=triton.next_power_of_2(N), num_warps=8, **pdl.launch_kwargs(x.device))
    return out, total


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up (T, 2I) contiguous, rows [gate | up] -> silu(gate) * up, (T, I)."""
    T, two_i = gate_up.shape
    out = torch.empty((T, two_i // 2), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(T, triton.cdiv(two_i // 2, block))](gate_up, out, two_i // 2, BLOCK=block, num_warps=4,
                                                          **pdl.launch_kwargs(gate_up.device))
    return out
