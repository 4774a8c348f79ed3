"""Run by tests/unit/test_kernels_interpreted.py in a subprocess with TRITON_INTERPRET=1 (Triton's
interpreter runs the CUDA kernels on CPU tensors): every quantized kernel of models/quant_gemv.py against
dequantize-then-matmul in float32; the 16-bit split-K GEMV (models/gemv.py) against float32 matmul; the fused
norm, SiLU-mul and RoPE-with-cache-write ops (models/fused_ops.py) and paged decode attention
(models/paged_attention.py, its launch shapes: one split, even splits merged by the last, chunked) against the
torch reference ops of models/ops.py; and a tiny model's prefill and decode steps (16-bit and each quantized
mode) through ModelRunner with the CUDA op set against the torch set (the wiring: QuantLinear, the op set, paged
decode). One JSON line per case on stdout."""
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from unittest import mock

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from qwen_triton.models import (counters, fp8_quant, fused_ops, gemv, ops,  # noqa: E402  (made at import)
                                paged_attention, quant_gemv, quant_launch, row_gemv)
from qwen_triton.tools.quantize import (dequantize_fp8, dequantize_int4, dequantize_int8, quantize_fp8,  # noqa: E402
                                        quantize_int4, quantize_int8)

ROWS = (1, 2, 16, 17, 64, 65)  # 1: int8 and fp8's elementwise path; 2-64 (int4: 1-64): tensor-core tiles; 65: prefill
# (N, K, launch): the default launch, and K split in 3 with a ragged last split (the float32 split sum), the
# tensor-core tiles with x first and (BLOCK_M, BLOCK_N, BLOCK_K, splits, warps, weight_first) with the weight first.
SHAPES = ((48, 256, None), (50, 384, (16, 128, 3, 4)), (50, 384, (16, 16, 128, 3, 4, True)))
# The fused prefill GEMM, M tiled too: ragged last row and column blocks, unsplit and split in 2, either operand
# first.
GEMM_ROWS = (65, 130)
GEMM_LAUNCHES = tuple((*launch, first) for first in (False, True)
                      for launch in ((16, 32, 64, 1, 4), (32, 16, 64, 2, 4)))


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
        if launch:  # a tile inside one group (BLOCK_K dividing it)
            launch = quant_launch.int4_launch(launch, group)
        q, s, z = quantize_int4(w, group)
        weight, got = dequantize_int4(q, s, z), quant_gemv.linear_int4(x, q, s, z, b, launch=launch)
    want = x.float() @ weight.T + (b.float() if bias else 0.0)
    return {"precision": precision, "group": group, "rows": rows, "shape": [n, k], "launch": launch,
            "bias": bias, "dtype": str(got.dtype), "out_shape": list(got.shape),
            "max_err": (got.float() - want).abs().max().item(), "max_abs": want.abs().max().item()}


def int4_refusals(gen) -> list[dict]:
    """int4 at one row and at 16 with a BLOCK_K that does not divide the group: refused, not computed across
    groups."""
    q, s, z = quantize_int4(torch.randn(48, 256, generator=gen), 32)
    out = []
    for rows in (1, 16):
        try:
            quant_gemv.linear_int4(torch.randn(rows, 256, generator=gen).half(), q, s, z, launch=(16, 64, 1, 4))
            out.append({"int4_refused": None, "rows": rows})
        except ValueError as exc:
            out.append({"int4_refused": str(exc), "rows": rows})
    return out


def gemv_cases(gen) -> list[dict]:
    """The 16-bit GEMV: default launches and a K split in 3 (its float32 split sum, by each tile's last split:
    gemv.store_tile), with bias."""
    out = []
    for rows, launch in ((1, None), (1, (16, 128, 3, 4)), (5, None), (5, (32, 128, 3, 4)), (40, None)):
        w = (torch.randn(50, 384, generator=gen) * 0.05).half()
        x, b = torch.randn(rows, 384, generator=gen).half(), (torch.randn(50, generator=gen) * 0.1).half()
        got = gemv.linear(x, w, b, launch=launch)
        want = x.float() @ w.float().T + b.float()
        out.append({"gemv_rows": rows, "launch": launch, "dtype": str(got.dtype), "out_shape": list(got.shape),
                    "max_err": (got.float() - want).abs().max().item(), "max_abs": want.abs().max().item()})
    return out


def split_counter_cases(gen) -> list[dict]:
    """After the split calls above, and two more of the same split launch: the device's done-counters
    (models/counters.py, which gemv.split_k counts tiles on) are back at zero and the two calls agree bit for
    bit."""
    w, x = (torch.randn(50, 384, generator=gen) * 0.05).half(), torch.randn(5, 384, generator=gen).half()
    first, second = (gemv.linear(x, w, None, launch=(16, 128, 3, 4)) for _ in range(2))
    counts = counters.split_counters(x.device, 1)
    return [{"split_counters": int(counts.numel()), "nonzero": int(counts.count_nonzero()),
             "repeat_equal": torch.equal(first, second)}]


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


def _model_steps(folder, op_set) -> tuple[torch.Tensor, str]:
    """Logits of a 16-token prefill then 3 decode steps, (4, V) float32, with the model built on op_set; and the
    name of the set the model was built on."""
    from qwen_triton.runtime.model_runner import ModelRunner
    from qwen_triton.runtime.schedule_output import ScheduleOutput
    from qwen_triton.runtime.sequence import SamplingParams, Sequence

    # On CPU select_ops would pick the torch set, and the paged decode kernel's default launch reads CUDA's
    # device properties: both are given here.
    fixed_launch = paged_attention.Launch(2, 16, paged_attention.WARPS, 1, 1)
    with mock.patch("qwen_triton.runtime.loader.select_ops", lambda device, dtype: op_set), \
            mock.patch.object(paged_attention, "default_launch", lambda *args: fixed_launch):
        runner = ModelRunner(folder, device="cpu", dtype="float16", use_cuda_graphs=False)
        seq = Sequence(list(range(100, 116)), SamplingParams())
        seq.block_table = [0, 1, 2]
        logits = [runner.execute(ScheduleOutput(prefill=(seq,)))[0]]
        for token in (200, 201, 202):
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(token)
            logits.append(runner.execute(ScheduleOutput(decode=(seq,)))[0])
    return torch.stack(logits).float(), runner.model.ops.name


def model_step_cases() -> list[dict]:
    from qwen_triton.config import ENGINE_CONFIG_FILE, FP8_ALGO, EngineLimits, QuantConfig, load_engine_folder
    from qwen_triton.tools.random_checkpoint import TINY
    from qwen_triton.tools.random_engine import make_random_engine

    limits = EngineLimits(dtype="float16", max_batch_size=2, max_input_len=64, max_seq_len=128)
    out = []
    for name, quant in (("float16", QuantConfig()), ("int8", QuantConfig("int8")),
                        ("int4", QuantConfig("int4", group_size=32)),
                        ("fp8", QuantConfig(quant_algo=FP8_ALGO))):
        root = Path(tempfile.mkdtemp())
        config = make_random_engine(root, TINY, limits, seed=3, quantization=quant).config
        # A 512-token vocabulary: the 16-bit head's GEMV over 151,936 rows would take the interpreter minutes.
        small = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=512))
        (root / ENGINE_CONFIG_FILE).write_text(small.to_json())
        folder = load_engine_folder(root)
        (fast, fast_set), (reference, reference_set) = (_model_steps(folder, ops.triton_ops(torch.float16)),
                                                        _model_steps(folder, ops.TORCH_OPS))
        out.append({"model_steps": name, "op_sets": [fast_set, reference_set], "steps": fast.shape[0],
                    "max_err": (fast - reference).abs().max().item(),
                    "max_abs": reference.abs().max().item(),
                    "argmax_agree": (fast.argmax(-1) == reference.argmax(-1)).float().mean().item()})
    return out


def dequantize_cases(gen) -> list[dict]:
    w = torch.randn(40, 256, generator=gen)
    q, s, z = quantize_int4(w, 64)
    int4 = quant_gemv.dequantize(q, s, z, 256, torch.float16)
    q8, s8 = quantize_int8(w)
    int8 = quant_gemv.dequantize(q8, s8, None, 256, torch.float16)
    return [{"dequantize": name, "equal": torch.equal(got, want.half())}
            for name, got, want in (("int4", int4, dequantize_int4(q, s, z)), ("int8", int8, dequantize_int8(q8, s8)))]


def fp8_quantize_cases(gen) -> list[dict]:
    """The one-kernel per-token fp8 quantization against ops.quantize_rows_fp8: rows of ordinary, loud (beyond
    e4m3's range before scaling) and zero activations, a K that is not a multiple of its block. The scales bit
    for bit, as torch makes them on CUDA; the e4m3 values only on the GPU (tests/gpu): the interpreter's
    float32 -> e4m3 cast is not the hardware's (it rounds -125.9 to -64, ties away from even)."""
    out = []
    for dtype, k in ((torch.float16, 1100), (torch.bfloat16, 2048)):
        x = torch.randn(5, k, generator=gen).to(dtype)
        x[1] *= 3000.0
        x[3] = 0.0
        got_q, got_s = fp8_quant.quantize_rows(x, rows=8)  # padded: rows 5-7 zeros, scale 1
        amax = x.float().abs().amax(dim=-1, keepdim=True)  # torch on CUDA divides by a number as times 1/448
        want_s = torch.where(amax > 0, amax * torch.tensor(1 / ops.FP8_MAX), torch.ones_like(amax))
        out.append({"fp8_quantize": str(dtype), "scales_equal": torch.equal(got_s[:5], want_s),
                    "shape": list(got_q.shape), "dtype": str(got_q.dtype), "zero_row_scale": got_s[3].item(),
                    "padding_scales": got_s[5:, 0].tolist(), "padding_zero": not got_q[5:].float().any().item()})
    return out


def row_cases(gen) -> list[dict]:
    """models/row_gemv.py (one float16 row; its PTX replaced by the same sums in plain Triton here) against
    dequantize-then-matmul: every kind, K split in 3 (float32 partial sums), weight rows masked (N below BLOCK_N),
    with and without a bias; the next tile prefetched (stages are the compiler's: the interpreter runs them as
    one), and int4's scales and zeros group-major; then int4 with one of the two transposed, refused."""
    out = []
    for kind in ("int4", "int8", "fp8"):
        for launch, bias, group_major in (((16, 128, 3, 4), True, False), ((64, 128, 1, 4), False, False),
                                          ((32, 64, 2, 2), True, False), ((16, 128, 3, 4, 3, True), True, True),
                                          ((32, 64, 2, 2, 1, True), False, False), ((64, 128, 1, 4), True, True)):
            w = torch.randn(50, 384, generator=gen) * 0.05
            x = torch.randn(1, 384, generator=gen).half()
            b = (torch.randn(50, generator=gen) * 0.1).half() if bias else None
            if kind == "int4":
                q, s, z = quantize_int4(w, 128)
                weight = dequantize_int4(q, s, z)
                s, z = row_gemv.to_group_major(s, z) if group_major else (s, z)
            else:
                (q, s), z = (quantize_int8(w) if kind == "int8" else quantize_fp8(w)), None
                weight = dequantize_int8(q, s) if kind == "int8" else dequantize_fp8(q, s)
                q = q.view(torch.uint8) if kind == "fp8" else q
            got = row_gemv.linear(kind, x, q, s, z, b, launch)
            want = x.float() @ weight.T + (b.float() if bias else 0.0)
            out.append({"row": kind, "launch": launch, "group_major": kind == "int4" and group_major,
                        "dtype": str(got.dtype), "out_shape": list(got.shape),
                        "max_err": (got.float() - want).abs().max().item(), "max_abs": want.abs().max().item()})
    q, s, z = quantize_int4(torch.randn(50, 384, generator=gen), 128)
    try:
        row_gemv.linear("int4", torch.randn(1, 384, generator=gen).half(), q, s.t().contiguous().t(), z, None,
                        (16, 128, 1, 4))
        out.append({"row_layout_refused": None})
    except ValueError as exc:
        out.append({"row_layout_refused": str(exc)})
    return out


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    for precision, group in (("int8", None), ("int4", 32), ("int4", 128), ("fp8", None)):
        for n, k, launch in SHAPES:
            for rows in ROWS:
                print(json.dumps(case(precision, group, rows, n, k, launch, rows % 2 == 1, gen)), flush=True)
        for launch in GEMM_LAUNCHES:
            for rows in GEMM_ROWS:
                print(json.dumps(case(precision, group, rows, 50, 384, launch, rows % 2 == 1, gen)), flush=True)
    for line in (int4_refusals(gen) + gemv_cases(gen) + fused_op_cases(gen) + paged_attention_cases(gen)
                 + dequantize_cases(gen) + fp8_quantize_cases(gen) + row_cases(gen) + split_counter_cases(gen)):
        print(json.dumps(line), flush=True)
    for line in model_step_cases():
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
