"""On a CUDA device: the weight-only quantized kernels (models/quant_gemv.py) against dequantize-then-matmul in
float32, within float16 rounding, for 1 to 64 rows (the GEMV) and beyond (dequantize + cuBLAS), and fp8 W8A8
(ops.fp8_linear, torch._scaled_mm row-wise) against its quantized operands multiplied in float32, at every linear
layer shape of Qwen-7B, Qwen2-7B and Qwen2.5-1.5B; and a quantized engine of each mode served with them, through
CUDA graphs and mixed steps, against the same engine on the torch ops, eager. Skipped without a GPU (their logic
is also run by Triton's interpreter on CPU: tests/unit/test_kernels_interpreted.py)."""
import itertools

import pytest
import torch

from qwen_triton.config import FP8_ALGO, QuantConfig
from qwen_triton.tools.quantize import (dequantize_fp8, dequantize_int4, dequantize_int8, quantize_fp8, quantize_int4,
                                        quantize_int8)
from gpu_serving import serve_joining  # tests/gpu is on sys.path (pytest rootdir-relative import)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# (N, K) of qkv_proj, o_proj, gate_up_proj, down_proj, from each model's config.json.
LAYER_SHAPES = {
    "qwen-7b": [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008)],
    "qwen2-7b": [(4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944)],
    "qwen2.5-1.5b": [(2048, 1536), (1536, 1536), (17920, 1536), (1536, 8960)],
}
ROWS = (1, 2, 7, 16, 17, 33, 64, 65, 300)
FP16_ROUNDING = 2 ** -10


def _layer(n, k, precision, group, gen):
    w = torch.randn(n, k, device="cuda", generator=gen) * 0.02
    if precision == "int8":
        q, s = quantize_int8(w)
        return (q, s), dequantize_int8(q, s)
    q, s, z = quantize_int4(w, group)
    return (q, s, z), dequantize_int4(q, s, z)


def _synced(case: tuple, call):
    """call() with the device synchronized after it, so that a fault (sticky: every later CUDA call fails too)
    is reported with the call that made it rather than at some later one."""
    try:
        out = call()
        torch.cuda.synchronize()
        return out
    except RuntimeError as exc:  # torch.AcceleratorError is one
        raise AssertionError(f"{case}: {exc}") from exc


@pytest.mark.parametrize("model", LAYER_SHAPES)
@pytest.mark.parametrize("precision,group", [("int8", None), ("int4", 128), ("int4", 64), ("int4", 32)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_quantized_linear_equals_dequantize_then_matmul_at_every_layer_shape(model, precision, group, dtype):
    from qwen_triton.models import quant_gemv, quant_launch

    gen = torch.Generator(device="cuda").manual_seed(0)
    op = quant_gemv.linear_int8 if precision == "int8" else quant_gemv.linear_int4
    for n, k in LAYER_SHAPES[model]:
        stored, weight = _layer(n, k, precision, group, gen)
        bias = torch.randn(n, device="cuda", generator=gen).to(dtype) * 0.1
        x = torch.randn(max(ROWS), k, device="cuda", generator=gen).to(dtype)
        for rows in ROWS:
            with_bias = bias if rows % 2 else None
            case = (model, precision, group, (n, k), rows)
            got = _synced(case, lambda: op(x[:rows], *stored, with_bias))
            want = x[:rows].float() @ weight.T + (with_bias.float() if with_bias is not None else 0.0)
            rounding = FP16_ROUNDING if dtype == torch.float16 else 2 ** -7
            # Beyond the GEMV's rows both prefill paths: dequantize + cuBLAS and the fused GEMM, with either operand
            # first in the MMA.
            gemm = quant_launch.gemm_launch(precision, group)
            fused = [_synced((*case, "fused", la), lambda la=la: op(x[:rows], *stored, with_bias, launch=la))
                     for la in (gemm, (*gemm[:5], not gemm[5]))] if rows > 64 else []
            for result in [got, *fused]:
                assert result.dtype == dtype and result.shape == (rows, n)
                err = (result.float() - want).abs().max().item()
                # Products in x's dtype summed in float32: the output's rounding plus the dequantized weight's.
                assert err <= 2 * rounding * want.abs().max().item(), (model, precision, group, (n, k), rows, err)


def _fp8_capable() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.skipif(not _fp8_capable(), reason="fp8 needs compute capability 8.9+")
@pytest.mark.parametrize("model", LAYER_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_fp8_linear_equals_its_quantized_operands_at_every_layer_shape(model, dtype):
    from qwen_triton.models import ops, quant_gemv, quant_launch

    gen = torch.Generator(device="cuda").manual_seed(0)
    for n, k in LAYER_SHAPES[model]:
        q, scales = quantize_fp8(torch.randn(n, k, device="cuda", generator=gen) * 0.02)
        weight = dequantize_fp8(q, scales)
        bias = (torch.randn(n, device="cuda", generator=gen) * 0.1).to(dtype)
        x = torch.randn(max(ROWS), k, device="cuda", generator=gen).to(dtype)
        for rows in ROWS:
            xq, x_scales = ops.quantize_rows_fp8(x[:rows])
            want = (xq.float() * x_scales) @ weight.T + bias.float()
            got = ops.fp8_linear(x[:rows], q, scales, bias)
            # float32 sums written in bfloat16 by the kernel, then cast to dtype, then the bias added.
            err = (got.float() - want).abs().max().item()
            assert got.dtype == dtype and got.shape == (rows, n)
            assert err <= 3 * 2 ** -7 * want.abs().max().item(), (model, (n, k), rows, err)
            # W8A16, the e4m3 weight with 16-bit activations (the GEMV, past 64 rows its fused GEMM): at every row
            # count, as the model may call it.
            w8a16 = quant_gemv.linear_fp8_weight(x[:rows], q, scales, bias)
            w8a16_want = x[:rows].float() @ weight.T + bias.float()
            err = (w8a16.float() - w8a16_want).abs().max().item()
            rounding = FP16_ROUNDING if dtype == torch.float16 else 2 ** -7
            assert w8a16.dtype == dtype and err <= 2 * rounding * w8a16_want.abs().max().item(), (model, (n, k), rows)
            # What the model calls: W8A16 for fewer rows than quant_launch.FP8_W8A8_ROWS, W8A8 from there on
            # (x quantized by fp8_quant's kernel).
            got = ops.small_batch_fp8_linear(x[:rows], q, scales, bias)
            if rows < quant_launch.FP8_W8A8_ROWS:
                assert torch.equal(got, w8a16), (model, (n, k), rows)
            else:
                err = (got.float() - want).abs().max().item()
                assert got.shape == (rows, n) and err <= 3 * 2 ** -7 * want.abs().max().item(), (model, (n, k), rows)


@pytest.mark.skipif(not _fp8_capable(), reason="fp8 needs compute capability 8.9+")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_the_fp8_quantize_kernel_makes_the_torch_ops_bits(dtype):
    """Ordinary, loud (beyond e4m3 before scaling) and zero rows, K not a multiple of the kernel's block."""
    from qwen_triton.models import fp8_quant, ops

    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows, k in ((1, 4096), (7, 1100), (300, 18944)):
        x = torch.randn(rows, k, device="cuda", generator=gen).to(dtype)
        x[rows // 2] *= 3000.0
        x[-1] = 0.0
        (got_q, got_s), (want_q, want_s) = fp8_quant.quantize_rows_padded(x), ops.quantize_rows_fp8(x)
        assert got_q.shape[0] == fp8_quant.padded_rows(rows) and not got_q[rows:].float().any(), (rows, k)
        assert torch.equal(got_s[:rows], want_s) and got_s[rows - 1:].eq(1.0).all(), (rows, k)
        assert torch.equal(got_q[:rows].view(torch.uint8), want_q.view(torch.uint8)), (rows, k)


def _stored_row(kind, n, k, gen):
    """A layer quantized as `kind`, in the form models/row_gemv.py reads (e4m3 as bytes), and its float32 weight."""
    w = torch.randn(n, k, device="cuda", generator=gen) * 0.02
    if kind == "fp8":
        q, s = quantize_fp8(w)
        return (q.view(torch.uint8), s, None), dequantize_fp8(q, s)
    (q, s, *z), weight = _layer(n, k, kind, 128, gen)
    return (q, s, z[0] if z else None), weight


@pytest.mark.parametrize("model", LAYER_SHAPES)
@pytest.mark.parametrize("kind", ["int8", "int4", "fp8"])
@torch.inference_mode()
def test_the_one_row_ptx_gemv_equals_dequantize_then_matmul_at_every_layer_shape(model, kind):
    """models/row_gemv.py at several launches (and the runtime's, where quant_launch takes it, also with its loads
    pipelined and with the next tile prefetched; int4 also with its scales and zeros group-major), x at ordinary
    magnitude and at |x| up to 4,000: the weights enter the float16 sums scaled by a power of two, without which
    a word's products overflow float16 at such x (int8: 4 x 127 x 4,000) and the output is not finite."""
    from qwen_triton.models import quant_launch, row_gemv

    if kind == "fp8" and not _fp8_capable():
        pytest.skip("fp8 needs compute capability 8.9+")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for n, k in LAYER_SHAPES[model]:
        (q, s, z), weight = _stored_row(kind, n, k, gen)
        bias = (torch.randn(n, device="cuda", generator=gen) * 0.1).half()
        table = quant_launch.ROW_LAUNCHES.get(kind, {}).values()
        launches = [la for la in {(64, 128, 4, 4), (16, 128, 1, 2), (32, 256, 8, 8), *table}
                    if k % la[1] == 0 and (kind != "int4" or 128 % la[1] == 0)]  # int4: inside its group of 128
        launches += [(*la, *more) for la in table if la in launches for more in ((3, False), (1, True))]
        layouts = [(s, z)] + ([row_gemv.to_group_major(s, z)] if kind == "int4" else [])
        for magnitude in (1.0, 4000.0):
            x = ((torch.rand(1, k, device="cuda", generator=gen) * 2 - 1) * magnitude).half()
            want = x.float() @ weight.T + bias.float()
            for (scales, zeros), launch in itertools.product(layouts, launches):
                case = (model, kind, (n, k), magnitude, launch, scales.stride())
                got = _synced(case, lambda: row_gemv.linear(kind, x, q, scales, zeros, bias, launch))
                err = (got.float() - want).abs().max().item()
                assert got.dtype == torch.float16 and got.shape == (1, n) and torch.isfinite(got).all(), case
                assert err <= 2 * FP16_ROUNDING * want.abs().max().item(), (*case, err)


@pytest.mark.skipif(not _fp8_capable(), reason="fp8 needs compute capability 8.9+")
@pytest.mark.parametrize("model", LAYER_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_the_fp8_gemm_equals_its_quantized_operands_rounded_once(model, dtype):
    """models/fp8_gemm.py (W8A8: linear past the GEMV's rows, linear_rows at decode rows) at row counts that are
    and are not multiples of its tiles, with and without a bias: x quantized as ops.quantize_rows_fp8 quantizes
    it, then sums with both scales, rounded to x's dtype. Hopper's fp8 MMA keeps fewer bits than float32 while it
    accumulates a K step, so the bound is the one torch._scaled_mm's W8A8 meets above (a bound of float16 rounding
    alone was exceeded on the H100)."""
    from qwen_triton.models import fp8_gemm, ops

    gen = torch.Generator(device="cuda").manual_seed(0)
    for n, k in LAYER_SHAPES[model]:
        q, scales = quantize_fp8(torch.randn(n, k, device="cuda", generator=gen) * 0.02)
        weight = dequantize_fp8(q, scales)
        bias = (torch.randn(n, device="cuda", generator=gen) * 0.1).to(dtype)
        x = torch.randn(512, k, device="cuda", generator=gen).to(dtype)
        for rows in (1, 65, 128, 300, 512):
            with_bias = bias if rows % 2 else None
            xq, x_scales = ops.quantize_rows_fp8(x[:rows])
            want = (xq.float() * x_scales) @ weight.T + (with_bias.float() if with_bias is not None else 0.0)
            got = _synced((model, (n, k), rows), lambda: fp8_gemm.linear(x[:rows], q, scales, with_bias))
            err = (got.float() - want).abs().max().item()
            assert got.dtype == dtype and got.shape == (rows, n), (model, (n, k), rows)
            assert err <= 3 * 2 ** -7 * want.abs().max().item(), (model, (n, k), rows, err)
        # linear_rows (decode steps): its launches, K whole and split (partials summed with the bias after).
        for rows in (1, 2, 16, 33, 64):
            with_bias = bias if rows % 2 else None
            xq, x_scales = ops.quantize_rows_fp8(x[:rows])
            want = (xq.float() * x_scales) @ weight.T + (with_bias.float() if with_bias is not None else 0.0)
            for launch in {fp8_gemm.rows_launch(rows, n), (16, 64, 128, 3, 4, 3), (64, 128, 256, 1, 4, 4)}:
                case = (model, (n, k), rows, launch)
                got = _synced(case, lambda: fp8_gemm.linear_rows(x[:rows], q, scales, with_bias, launch))
                err = (got.float() - want).abs().max().item()
                assert got.dtype == dtype and got.shape == (rows, n), case
                assert err <= 3 * 2 ** -7 * want.abs().max().item(), (*case, err)


MODES = [QuantConfig("int8"), QuantConfig("int4", group_size=32)]
MODES += [QuantConfig(quant_algo=FP8_ALGO)] if _fp8_capable() else []


@pytest.mark.parametrize("quant", MODES, ids=lambda q: q.precision)
def test_a_quantized_engine_gives_the_reference_ops_tokens_through_graphs_and_mixed_steps(folder, limits, prompts,
                                                                                         tmp_path, quant,
                                                                                         monkeypatch):
    """Greedy tokens of the quantized tiny engine on CUDA float16: the Triton set (quantized GEMV in CUDA graphs,
    mixed steps) against the same weights on the torch set (dequantize-then-matmul, eager)."""
    from qwen_triton.models import ops
    from qwen_triton.runtime import loader
    from qwen_triton.runtime.model_runner import ModelRunner
    from qwen_triton.tools.convert import convert_checkpoint

    engine = convert_checkpoint(folder.path.parent / "hf", tmp_path / "engine", limits, quant=quant)

    def serve(graphs):
        runner = ModelRunner(engine, device="cuda", dtype="float16", use_cuda_graphs=graphs)
        assert runner.model.ops.name == ("triton" if graphs else "torch")
        return serve_joining(runner, limits, prompts, 24)  # mixed steps where graphed

    fast, mixed_steps = serve(True)
    monkeypatch.setattr(loader, "select_ops", lambda device, dtype: ops.TORCH_OPS)
    reference, _ = serve(False)
    assert mixed_steps == len(prompts) - 1 and [len(o) for o in fast] == [24] * len(prompts)
    agree = sum(a == b for f, r in zip(fast, reference) for a, b in zip(f, r)) / sum(map(len, reference))
    assert agree >= 0.9, (agree, fast, reference)  # float16 rounding may flip a near tie, rarely
