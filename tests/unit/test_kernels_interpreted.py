"""CUDA kernels run by Triton's interpreter on this CPU (TRITON_INTERPRET=1, in a subprocess: the kernels are
made at import): models/quant_gemv.py against dequantize-then-matmul in float32 (the packing, group and split
indexing, masks, the split sum, the fused prefill GEMM tiled over rows), models/gemv.py against float32 matmul,
and models/fused_ops.py and models/paged_attention.py against the torch reference ops, at small shapes; then a
quantized tiny model's steps through ModelRunner with the CUDA op set against the torch set. Speed and the real layer shapes are tests/gpu's. Triton comes from `make test`'s interpreter
folder, outside the server's environment."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "interpreted_kernels.py"
FP16_ROUNDING = 2 ** -10  # one output rounding to float16, relative to the output's largest magnitude


@pytest.fixture(scope="module")
def results(run_triton_script) -> list[dict]:
    return run_triton_script(SCRIPT, TRITON_INTERPRET="1")


def test_every_quantized_gemv_case_equals_dequantize_then_matmul(results):
    cases = [r for r in results if "precision" in r]
    # int8, int4 g32, int4 g128, fp8 x (shapes x row counts + fused GEMM launches x row counts): none was lost;
    # the weight first in the MMA at 6 row counts and in 2 GEMM launches x 2 row counts
    assert len(cases) == 4 * (3 * 6 + 4 * 2)
    assert sum(len(r["launch"] or ()) == 6 and r["launch"][5] for r in cases) == 4 * (6 + 2 * 2)
    for r in cases:
        assert r["dtype"] == "torch.float16" and r["out_shape"] == [r["rows"], r["shape"][0]], r
        assert r["max_err"] <= 2 * FP16_ROUNDING * r["max_abs"], r


def test_the_one_row_ptx_gemv_sums_equal_dequantize_then_matmul(results):
    """models/row_gemv.py's words, x pairs, zero pairs, splits and scales (its PTX is checked on the GPU), the
    next tile prefetched or not, int4's scales and zeros row by row or group-major."""
    cases = [r for r in results if "row" in r]
    assert [r["row"] for r in cases] == ["int4"] * 6 + ["int8"] * 6 + ["fp8"] * 6
    assert sum(r["group_major"] for r in cases) == 2 and sum(len(r["launch"]) == 6 and r["launch"][5]
                                                             for r in cases) == 6
    for r in cases:
        assert r["dtype"] == "torch.float16" and r["out_shape"] == [1, 50], r
        assert r["max_err"] <= 2 * FP16_ROUNDING * r["max_abs"], r


def test_int4_one_row_refuses_scales_and_zeros_in_different_layouts(results):
    """A group-major scale tensor read with row-by-row zeros would pair each group's scale with another's zero."""
    [r] = [r for r in results if "row_layout_refused" in r]
    assert r["row_layout_refused"] is not None and "scales and zeros" in r["row_layout_refused"], r
    assert "strides (1, 50) and (3, 1)" in r["row_layout_refused"], r


def test_int4_refuses_a_tile_spanning_groups_at_one_row_and_at_several(results):
    refusals = [r for r in results if "int4_refused" in r]
    assert [r["rows"] for r in refusals] == [1, 16]
    for r in refusals:
        assert r["int4_refused"] is not None and "BLOCK_K" in r["int4_refused"], r
        assert "group size 32" in r["int4_refused"] and "got 64" in r["int4_refused"], r


def test_the_one_pass_dequantize_kernel_equals_the_layout_reference(results):
    assert [r for r in results if "dequantize" in r] == [{"dequantize": "int4", "equal": True},
                                                          {"dequantize": "int8", "equal": True}]


def test_the_fp8_quantize_kernel_makes_the_scales_torch_makes_on_cuda(results):
    """Its e4m3 values are compared on the GPU (tests/gpu/test_quant_kernels.py): the interpreter casts wrongly."""
    cases = [r for r in results if "fp8_quantize" in r]
    assert [r["fp8_quantize"] for r in cases] == ["torch.float16", "torch.bfloat16"]
    for r in cases:
        assert r["scales_equal"] and r["zero_row_scale"] == 1.0, r
        assert r["dtype"] == "torch.float8_e4m3fn" and r["shape"][0] == 8, r
        assert r["padding_scales"] == [1.0, 1.0, 1.0] and r["padding_zero"], r


def test_the_16_bit_gemv_equals_float32_matmul_split_or_not(results):
    cases = [r for r in results if "gemv_rows" in r]
    assert len(cases) == 5 and any(r["launch"] and r["launch"][2] == 3 for r in cases)
    for r in cases:
        assert r["dtype"] == "torch.float16" and r["out_shape"] == [r["gemv_rows"], 50], r
        assert r["max_err"] <= 2 * FP16_ROUNDING * r["max_abs"], r


def test_split_k_leaves_its_tile_counters_at_zero_so_the_next_call_sums_right(results):
    """Each split call's last program per tile sums the partials and zeroes the tile's counter (gemv.store_tile):
    left counting, the next call's tiles would never see their last split and their output would stay unwritten."""
    [r] = [r for r in results if "split_counters" in r]
    assert r["split_counters"] > 0 and r["nonzero"] == 0 and r["repeat_equal"], r


def test_the_fused_ops_equal_the_torch_reference_ops(results):
    cases = [r for r in results if r.get("op") not in (None, "paged_decode")]
    assert {r["op"] for r in cases} == {"rms_norm", "silu_mul", "add_rms_norm", "rope_write_kv"} and len(cases) == 9
    for r in cases:  # float16 in and out: within a rounding or two of the reference's own float16 result
        assert r["same_shape"] and r["max_err"] <= 2 * FP16_ROUNDING * r["max_abs"], r


def test_paged_decode_attention_equals_sdpa_over_the_gathered_blocks_for_each_launch_shape(results):
    cases = [r for r in results if r.get("op") == "paged_decode"]
    assert len(cases) == 4
    for r in cases:
        assert r["same_shape"] and r["max_err"] <= 2e-3, r  # as tests/gpu/test_kernels.py bounds it


def test_a_models_steps_with_the_cuda_op_set_equal_the_torch_sets(results):
    """float16, int8 and int4: the same weights either way, float16 rounding apart. fp8: decode rows read the
    e4m3 weight with 16-bit activations on CUDA (W8A16) where the torch set quantizes them too (W8A8)."""
    cases = {r["model_steps"]: r for r in results if "model_steps" in r}
    assert set(cases) == {"float16", "int8", "int4", "fp8"} and all(r["steps"] == 4 for r in cases.values())
    assert all(r["op_sets"] == ["triton", "torch"] for r in cases.values())
    for name, r in cases.items():
        bound = 0.1 if name == "fp8" else 0.01
        assert r["max_err"] <= bound * r["max_abs"] and r["argmax_agree"] == 1.0, r
