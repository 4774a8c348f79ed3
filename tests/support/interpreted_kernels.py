"""Run by tests/unit/test_kernels_interpreted.py in a subprocess with TRITON_INTERPRET=1 (Triton's
interpreter runs the CUDA kernels on CPU tensors): every quantized kernel of models/quant_gemv.py against
dequantize-then-matmul in float32; the 16-bit split-K GEMV (models/gemv.py) against float32 matmul; the fused
norm, SiLU-mul and RoPE-with-cache-write ops (models/fused_ops.py) and paged decode attention
(models/paged_attention.py, its launch shapes: one split, even splits merged by the last, chunked) against the
torch reference ops of models/ops.py. One JSON line per case on stdout."""
import json
import os

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from qwen_triton.models import fused_ops, gemv, ops, paged_attention, quant_gemv  # noqa: E402  (made at import)
from qwen_triton.tools.quantize import (dequantize_fp8, dequantize_int4, dequantize_int8, quantize_fp8,  # noqa: E402
                                        quantize_int4, quantize_int8)

ROWS = (1, 2, 16, 17, 64, 65)  # 1: the elementwise path; 2-64: tensor-core tiles; 65: dequantize + matmul
# (N, K, launch): the default launch, and K split in 3 with a ragged last split (the float32 split sum).
SHAPES = ((48, 256, None), (50, 384, (16, 128, 3, 4)))
# The fused prefill GEMM, M tiled too (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps): ragged last row and column
# blocks, unsplit and split in 2.
GEMM_ROWS, GEMM_LAUNCHES = (65, 130), ((16, 32, 64, 1, 4), (32, 16, 64, 2, 4))


def case(precision: str, group: int | None, rows: int, n: int, k: int, launch, bias: bool, gen) -> dict:
    w = torch.randn(n, k, generator=gen) * 0.05
    x = torch.randn(rows, k, generator=gen).half()
    b = (torch.randn(n, generator=gen) * 0.1).half() if bias else None
    if precision == "int8":
        q, s = quantize_int8(w)
        weight, got = dequantize_int8(q, s), quant_gemv.linear_int8(x, q, s, b, launch=launch)
    elif precision == "fp8":  # the e4m3 weight read by the same GEMV (W8A16)
        q, s = quantize_fp8(w)
        weight, got = dequantize_fp8(q, s), quant_gemv.linear_fp8_weight(x, q, s, b, launch=launch)
    else:
        q, s, z = quantize_int4(w, group)
        weight, got = dequantize_int4(q, s, z), quant_gemv.linear_int4(x, q, s, z, b, launch=launch)
    want = x.float() @ weight.T + (b.float() if bias else 0.0)
    return {"precision": precision, "group": group, "rows": rows, "shape": [n, k], "launch": launch,
            "bias": bias, "dtype": str(got.dtype), "out_shape": list(got.shape),
            "max_err": (got.float() - want).abs().max().item(), "max_abs": want.abs().max().item()}


def gemv_cases(gen) -> list[dict]:
    """The 16-bit GEMV: default launches and a K split in 3 (its float32 split sum, gemv.sum_splits), with bias."""
    out = []
    for rows, launch in ((1, None), (1, (16, 128, 3, 4)), (5, None), (5, (32, 128, 3, 4)), (40, None)):
        w = (torch.randn(50, 384, generator=gen) * 0.05).half()
        x, b = torch.randn(rows, 384, generator=gen).half(), (torch.randn(50, generator=gen) * 0.1).half()
        got = gemv.linear(x, w, b, launch=launch)
        want = x.float() @ w.float().T + b.float()
        out.append({"gemv_rows": rows, "launch": launch, "dtype": str(got.dtype), "out_shape": list(got.shape),
                    "max_err": (got.float() - want).abs().max().item(), "max_abs": want.abs().max().item()})
    return out


def _diff(name: str, got: torch.Tensor, want: torch.Tensor, **extra) -> dict:
    return {"op": name, **extra, "same_shape": list(got.shape) == list(want.shape),
            "max_err": (got.float() - want.float()).abs().max().item(), "max_abs": want.float().abs().max().item()}


def fused_op_cases(gen) -> list[dict]:
    """float16 tokens through each fused op and its torch reference (rounding at the same steps)."""
    T, H, Hkv, D = 5, 4, 2, 64
    x, res = torch.randn(T, 256, generator=gen).half(), torch.randn(T, 256, generator=gen).half()
    w = torch.randn(256, generator=gen).half()
    gate_up = torch.randn(T, 512, generator=gen).half()
    out = [_diff("rms_norm", fused_ops.rms_norm(x, w, 1e-6), ops.rms_norm(x, w, 1e-6)),
           _diff("silu_mul", fused_ops.silu_mul(gate_up), ops.silu_mul(gate_up))]
    for got, want, part in zip(fused_ops.add_rms_norm(x, res, w, 1e-6), ops.add_rms_norm(x, res, w, 1e-6),
                               ("normed", "sum")):
        out.append(_diff("add_rms_norm", got, want, part=part))
    qkv = torch.randn(T, (H + 2 * Hkv) * D, generator=gen).half()
    angles = torch.rand(T, 1, D // 2, generator=gen) * 6.28
    cos, sin = (torch.cat((f(angles), f(angles)), dim=-1).half() for f in (torch.cos, torch.sin))
    slots = torch.tensor([3, 17, 18, 40, 63])
    caches = [[torch.zeros(4, 16, Hkv, D).half() for _ in range(2)] for _ in range(2)]
    got = fused_ops.rope_write_kv(qkv, H, Hkv, cos, sin, slots, *caches[0])
    want = ops.rope_write_kv(qkv, H, Hkv, cos, sin, slots, *caches[1])
    out += [_diff("rope_write_kv", g, r, part=part) for g, r, part in zip(got, want, ("q", "k", "v"))]
    out += [_diff("rope_write_kv", g, r, part=f"{part}_cache") for g, r, part in zip(caches[0], caches[1], "kv")]
    return out


def paged_attention_cases(gen) -> list[dict]:
    B, H, Hkv, D, block_size, blocks = 3, 8, 2, 64, 16, 24
    k_cache = torch.randn(blocks, block_size, Hkv, D, generator=gen).half()
    v_cache = torch.randn(blocks, block_size, Hkv, D, generator=gen).half()
    q = torch.randn(B, H, D, generator=gen).half()
    lens = torch.tensor([1, 17, 100])  # one token, a block edge plus one, most of the table
    tables = torch.randperm(blocks, generator=gen)[:B * 8].view(B, 8).int()
    want = ops.decode_attention(q.float(), k_cache.float(), v_cache.float(), tables.long(), lens)
    out = []
    for splits, tile, chunk, stages in ((1, 64, 0, 1), (4, 32, 0, 1), (2, 16, 1, 2), (8, 16, 2, 1)):
        launch = paged_attention.Launch(splits, tile, paged_attention.WARPS, chunk, stages)
        got = paged_attention.decode(q, k_cache, v_cache, tables, lens, launch)
        out.append(_diff("paged_decode", got, want, launch=[splits, tile, chunk, stages]))
    return out


def dequantize_cases(gen) -> list[dict]:
    w = torch.randn(40, 256, generator=gen)
    q, s, z = quantize_int4(w, 64)
    int4 = quant_gemv.dequantize(q, s, z, 256, torch.float16)
    q8, s8 = quantize_int8(w)
    int8 = quant_gemv.dequantize(q8, s8, None, 256, torch.float16)
    return [{"dequantize": name, "equal": torch.equal(got, want.half())}
            for name, got, want in (("int4", int4, dequantize_int4(q, s, z)), ("int8", int8, dequantize_int8(q8, s8)))]


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    for precision, group in (("int8", None), ("int4", 32), ("int4", 128), ("fp8", None)):
        for n, k, launch in SHAPES:
            for rows in ROWS:
                print(json.dumps(case(precision, group, rows, n, k, launch, rows % 2 == 1, gen)), flush=True)
        for launch in GEMM_LAUNCHES:
            for rows in GEMM_ROWS:
                print(json.dumps(case(precision, group, rows, 50, 384, launch, rows % 2 == 1, gen)), flush=True)
    for line in gemv_cases(gen) + fused_op_cases(gen) + paged_attention_cases(gen) + dequantize_cases(gen):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
