"""The kernels the model calls, chosen once at load: select_ops(device, dtype) returns an Ops of plain functions,
either the torch reference set (any device, any dtype: CPU serving and the fidelity tests run it; on CPU with
torch's int8 weight-only matmul for int8 layers) or the CUDA set (the Triton kernels of fused_ops, gemv and
paged_attention). models/qwen.py calls ops.<name> and never asks
which set it holds; no op branches on device or dtype per call. Every op launches a fixed set of kernels for its
input shapes, so CUDA graphs capture either set as it is.

Shapes (T tokens, H query heads, Hkv KV heads, D head dim, B decode rows; caches (num_blocks, block_size, Hkv, D)):
  linear(x (M, K), weight (N, K), bias (N,) | None) -> (M, N)
  linear_int8(x (M, K), qweight int8 (N, K), scales float32 (N,), bias) -> (M, N)    layout: models/quant_linear.py
  linear_int4(x (M, K), qweight uint8 (N, K/2), scales float32 (N, K/g), zeros uint8 (N, K/g), bias) -> (M, N)
  linear_fp8(x (M, K), qweight float8_e4m3fn (N, K), scales float32 (N,), bias) -> (M, N)
  rms_norm(x (T, N), weight (N,), eps) -> (T, N)
  add_rms_norm(x (T, N), residual (T, N), weight (N,), eps) -> (rms_norm(x + residual), x + residual)
  rope_write_kv(qkv (T, (H + 2 Hkv) D), H, Hkv, cos, sin (T, 1, D), slot_mapping (T,), k_cache, v_cache)
      -> q (T, H, D), k (T, Hkv, D) rotated, v (T, Hkv, D); k and v written to each token's cache slot first
  silu_mul(gate_up (T, 2I), rows [gate | up]) -> silu(gate) * up, (T, I)
  prefill_attention(q (T, H, D), k, v (T, Hkv, D), seq_lens) -> (T, H, D), causal within each sequence
  decode_attention(q (B, H, D), k_cache, v_cache, block_tables (B, max_blocks), context_lens (B,)) -> (B, H, D)
  prefix_prefill_attention(q (T, H, D), k_cache, v_cache, seq_lens, cached_lens, block_tables (P, max_blocks))
      -> (T, H, D): each sequence's queries are its tokens past cached_lens, causal over all its tokens

The CUDA set takes raw pointers, so it relies on invariants instead of checking them per call: activations are
2-D with unit stride along the last dimension (the model keeps this: each is a fresh kernel output or a
contiguous reshape); every weight and cache is contiguous and in the model's dtype (check_operands, at load).
The quantized linear ops: on CUDA in half precision, quant_gemv's dequantizing GEMV for decode rows and a
one-pass dequantize + cuBLAS beyond; on CPU models/cpu_quant.py's (torch's int8/int4 kernels in bfloat16, a
chunked dequantize + GEMM in float32 and float16); elsewhere the reference,
which builds the (N, K) weight in x's dtype and runs F.linear (under CUDA graph capture the dequantized weight is
allocated from the graph's pool). fp8 is W8A8 (x quantized per token, then torch._scaled_mm; on CUDA in half
precision models/fp8_gemm.py), except decode steps of fewer than quant_launch.FP8_W8A8_ROWS rows on CUDA in half
precision: the GEMV on the e4m3 weight, activations 16-bit (W8A16)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import fp8_gemm, fp8_quant, fused_ops, gemv, paged_attention, quant_gemv, quant_launch
from .cpu_quant import (chunked_linear_int4, chunked_linear_int8, int4pack_layout, int4pack_linear,
                        int8pack_linear)
from .quant_linear import dequantize_int4, dequantize_int8

# Without Triton (torch's CPU wheel carries none) every device gets the torch set.
TRITON = all(module.triton is not None for module in (fp8_quant, fused_ops, gemv, paged_attention, quant_gemv))
HALF = (torch.float16, torch.bfloat16)
# 4-D inputs: with 3-D ones SDPA takes its math path (a float32 (H, n, n) softmax) on CUDA. Not cuDNN: it builds
# a plan on the host for every new sequence length, which stalls the engine thread under load.
PREFILL_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
FP8_MAX = fp8_quant.FP8_MAX  # largest finite float8_e4m3fn


def dequant_linear_int8(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: W = qweight * scales in x's dtype (a fresh (N, K) tensor per call), then F.linear."""
    return F.linear(x, dequantize_int8(qweight, scales, x.dtype), bias)


def dequant_linear_int4(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: W = (unpack(qweight) - zeros) * scales per group, in x's dtype, then F.linear."""
    return F.linear(x, dequantize_int4(qweight, scales, zeros, x.dtype), bias)


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (float8_e4m3fn (M, K), float32 scales (M, 1)): each row scaled so its largest magnitude is e4m3's
    largest (dynamic, per token); an all-zero row gets scale 1."""
    x32 = x.float()
    amax = x32.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x32 / scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def fp8_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
               quantize: Callable = quantize_rows_fp8) -> torch.Tensor:
    """W8A8: x quantized per token to e4m3 (by quantize: quantize_rows_fp8's contract, rows perhaps padded), then
    one fp8 matmul whose float32 sums get both scales (row-wise torch._scaled_mm). On CUDA that kernel writes
    bfloat16 only (f8f8bf16), so a float16 model casts its output."""
    xq, x_scales = quantize(x)  # it may pad rows (fp8_quant.quantize_rows_padded): their outputs are dropped
    out_dtype = torch.bfloat16 if x.is_cuda else x.dtype
    out = torch._scaled_mm(xq, qweight.t(), scale_a=x_scales, scale_b=scales[None, :], out_dtype=out_dtype)
    out = out[:x.shape[0]].to(x.dtype)
    return out if bias is None else out + bias


def small_batch_fp8_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """fp8 on CUDA in half precision: W8A8 on the fp8 tensor cores (x quantized per token as fp8_linear quantizes
    it, both scales and the rounding to x's dtype in the kernel's epilogue) from quant_launch.FP8_W8A8_ROWS rows:
    fp8_gemm.linear_rows up to gemv.MAX_ROWS (decode steps), fp8_gemm.linear wider (prefill, mixed steps). Fewer
    rows (a decode row) read the e4m3 weight with 16-bit x (quant_gemv.linear_fp8_weight)."""
    rows = x.shape[0]
    if rows < quant_launch.FP8_W8A8_ROWS:
        return quant_gemv.linear_fp8_weight(x, qweight, scales, bias)
    if rows <= gemv.MAX_ROWS:
        return fp8_gemm.linear_rows(x, qweight, scales, bias)
    return fp8_gemm.linear(x, qweight, scales, bias)


def prefix_prefill_attention(q, k_cache, v_cache, seq_lens: tuple[int, ...], cached_lens: tuple[int, ...],
                             block_tables: torch.Tensor) -> torch.Tensor:
    """Prefill of sequences whose first cached_lens tokens are already in the cache (prefix reuse): every key is
    read back from the cache, this step's included (written before). No kernel of its own on any device: a
    gather and SDPA with an explicit causal mask shifted by the cached length."""
    _, block_size, num_kv_heads, D = k_cache.shape
    groups = q.shape[1] // num_kv_heads
    outs, start = [], 0
    for row, (n, cached) in enumerate(zip(seq_lens, cached_lens)):
        total = cached + n
        blocks = block_tables[row, :(total + block_size - 1) // block_size]
        keys, values = (cache[blocks].view(-1, num_kv_heads, D)[:total].transpose(0, 1)[None]  # (1, Hkv, total, D)
                        for cache in (k_cache, v_cache))
        positions = torch.arange(total, device=q.device)
        visible = positions[None, :] <= positions[cached:, None]  # (n, total): query i sits at cached + i
        o = F.scaled_dot_product_attention(q[None, start:start + n].transpose(1, 2), repeat_kv(keys, groups, 1),
                                           repeat_kv(values, groups, 1), attn_mask=visible)  # (1, H, n, D)
        outs.append(o[0].transpose(0, 1))  # (n, H, D)
        start += n
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # (T, H, D)


@dataclass(frozen=True)
class Ops:
    """One implementation of each op (shapes in the module docstring)."""

    name: str  # "torch" or "triton": the set select_ops chose
    linear: Callable
    rms_norm: Callable
    add_rms_norm: Callable
    rope_write_kv: Callable
    silu_mul: Callable
    prefill_attention: Callable
    decode_attention: Callable
    # decode_attention reads only each sequence's live blocks (its cost follows context_lens, not the table
    # width): one full-width decode graph serves every context, and mixed steps can be graphed.
    paged_decode: bool
    # The kernels index weights and caches as dense memory of the model's dtype (check_operands).
    dense_operands: bool
    # Weight-only quantized layers (models/quant_linear.py QuantLinear); the reference unless a set says otherwise.
    linear_int8: Callable = dequant_linear_int8
    linear_int4: Callable = dequant_linear_int4
    linear_fp8: Callable = fp8_linear
    # (qweight, scales, zeros, dtype) -> {name: tensor}: an int4 layout of the set's own, made once at load and
    # passed to linear_int4 by name (QuantLinear.prepare); None: linear_int4 reads the engine's layout only.
    prepare_int4: Callable | None = None
    prefix_prefill_attention: Callable = prefix_prefill_attention  # the same gather + SDPA in every set


def repeat_kv(kv: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    """GQA: kv head j serves query heads j*groups .. j*groups + groups - 1 (HF repeat_kv order)."""
    return kv if groups == 1 else kv.repeat_interleave(groups, dim=dim)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # As HF Qwen2: normalise in float32, cast back, then scale in the weight's dtype.
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    total = x + residual
    return rms_norm(total, weight, eps), total


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half pairs i with i + D/2
    return x * cos + rotated * sin  # (T, heads, D)


def rope_write_kv(qkv, num_heads: int, num_kv_heads: int, cos, sin, slot_mapping, k_cache, v_cache):
    T, D = qkv.shape[0], k_cache.shape[-1]
    q, k, v = qkv.split((num_heads * D, num_kv_heads * D, num_kv_heads * D), dim=-1)
    q = apply_rope(q.view(T, num_heads, D), cos, sin)  # (T, H, D)
    k = apply_rope(k.view(T, num_kv_heads, D), cos, sin)  # (T, Hkv, D)
    v = v.view(T, num_kv_heads, D)  # (T, Hkv, D)
    for cache, new in ((k_cache, k), (v_cache, v)):
        cache.view(-1, num_kv_heads, D)[slot_mapping] = new  # cache rows: (slot, kv head)
    return q, k, v


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def prefill_attention(q, k, v, seq_lens: tuple[int, ...]) -> torch.Tensor:
    # Every sequence starts at token 0, so its attention is causal self-attention over its own tokens
    # and the cache is only written, never read.
    groups = q.shape[1] // k.shape[1]
    outs, start = [], 0
    with sdpa_kernel(PREFILL_SDPA_BACKENDS):
        for n in seq_lens:
            qs, ks, vs = (t[None, start:start + n].transpose(1, 2) for t in (q, k, v))  # (1, H|Hkv, n, D)
            o = F.scaled_dot_product_attention(qs, repeat_kv(ks, groups, 1), repeat_kv(vs, groups, 1), is_causal=True)
            outs.append(o[0].transpose(0, 1))  # (n, H, D)
            start += n
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # (T, H, D)


def decode_attention(q, k_cache, v_cache, block_tables, context_lens) -> torch.Tensor:
    # Gathers every block of the table (padding included) and masks past each context: cost follows the
    # table's width, hence paged_decode=False.
    B, max_blocks = block_tables.shape
    _, block_size, num_kv_heads, D = k_cache.shape
    L, groups = max_blocks * block_size, q.shape[1] // num_kv_heads
    keys = k_cache[block_tables].view(B, L, num_kv_heads, D).transpose(1, 2)  # (B, Hkv, L, D)
    values = v_cache[block_tables].view(B, L, num_kv_heads, D).transpose(1, 2)
    visible = torch.arange(L, device=q.device)[None, :] < context_lens[:, None]  # (B, L)
    out = F.scaled_dot_product_attention(q[:, :, None, :], repeat_kv(keys, groups, 1), repeat_kv(values, groups, 1),
                                         attn_mask=visible[:, None, None, :])  # (B, H, 1, D)
    return out[:, :, 0, :]  # (B, H, D)


def small_batch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through the split-K GEMV when x has few rows (decode steps) and cuBLAS otherwise (prefill,
    mixed steps). The row count differs from call to call, so this one choice is the op's, made per call.
    Half precision only: with float32 inputs tl.dot would round to TF32, where cuBLAS (torch's default) does not."""
    if x.shape[0] <= gemv.max_rows(*weight.shape):
        return gemv.linear(x, weight, bias)
    return F.linear(x, weight, bias)


TORCH_OPS = Ops(name="torch", linear=F.linear, rms_norm=rms_norm, add_rms_norm=add_rms_norm,
                rope_write_kv=rope_write_kv, silu_mul=silu_mul, prefill_attention=prefill_attention,
                decode_attention=decode_attention, paged_decode=False, dense_operands=False)


def triton_ops(dtype: torch.dtype) -> Ops:
    """The CUDA set: fused Triton norms, RoPE + cache write, SiLU-mul and paged decode attention at any dtype;
    the GEMV paths for linear layers (16-bit and weight-only quantized: quant_gemv) only in half precision
    (cuBLAS and the dequantizing reference for float32)."""
    half = dtype in HALF
    return Ops(name="triton", linear=small_batch_linear if half else F.linear,
               rms_norm=fused_ops.rms_norm, add_rms_norm=fused_ops.add_rms_norm,
               rope_write_kv=fused_ops.rope_write_kv, silu_mul=fused_ops.silu_mul,
               prefill_attention=prefill_attention, decode_attention=paged_attention.decode,
               paged_decode=True, dense_operands=True,
               linear_int8=quant_gemv.linear_int8 if half else dequant_linear_int8,
               linear_int4=quant_gemv.linear_int4 if half else dequant_linear_int4,
               linear_fp8=small_batch_fp8_linear if half else fp8_linear)


# The torch set on CPU (models/cpu_quant.py): torch's int8 and int4 weight-only kernels in bfloat16, the chunked
# dequantize in float32 and float16.
CPU_OPS = {torch.bfloat16: replace(TORCH_OPS, linear_int8=int8pack_linear, linear_int4=int4pack_linear,
                                   prepare_int4=int4pack_layout),
           **{dtype: replace(TORCH_OPS, linear_int8=chunked_linear_int8, linear_int4=chunked_linear_int4)
              for dtype in (torch.float32, torch.float16)}}


def select_ops(device: torch.device | str, dtype: torch.dtype) -> Ops:
    """The op set for a model on `device` in `dtype`; called once, at load."""
    device = torch.device(device)
    if device.type == "cpu":
        return CPU_OPS[dtype]
    return triton_ops(dtype) if device.type == "cuda" and TRITON else TORCH_OPS


def check_operands(ops: Ops, tensors: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> None:
    """At load: every weight and cache the ops will index is dense and in the model's dtype (dtype None: in its
    own, as quantized weights are). The kernels take raw pointers, so a strided or mistyped operand would be
    read wrongly rather than refused."""
    if not ops.dense_operands:
        return
    bad = [f"{name} {tuple(t.shape)} {t.dtype}" for name, t in tensors
           if not t.is_contiguous() or dtype not in (None, t.dtype)]
    if bad:
        raise ValueError(f"the {ops.name} ops need contiguous {dtype or ''} operands: " + ", ".join(bad[:5]))
