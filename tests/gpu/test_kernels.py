"""On a CUDA device: the Triton kernels (paged decode attention, the fused norm / RoPE-with-cache-write /
SiLU-mul ops, the split-K GEMV) against the torch expressions they replace, and the op set a model is loaded
with (models/ops.py select_ops). Skipped without a GPU."""
import pytest
import torch

from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams, Sequence
from qwen_triton.runtime.schedule_output import ScheduleOutput

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


# One pass; split evenly over the context (flash-decoding); chunks of 1 or 2 tiles per program, so long sequences
# get more programs and short ones leave programs empty; chunks too few for the table (shared evenly beyond);
# each with and without the tile loop pipelined; the default for the shapes.
LAUNCHES = [(splits, tile, chunk, stages) for splits, tile, chunk in
            [(1, 128, 0), (4, 128, 0), (16, 64, 0), (8, 32, 0), (8, 16, 1), (4, 16, 2), (2, 16, 1)]
            for stages in (1, 2)] + [None]


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 2)])
def test_paged_decode_kernel_matches_sdpa_over_gathered_blocks(heads, kv_heads, launch):
    from qwen_triton.models import paged_attention

    if paged_attention.triton is None:
        pytest.skip("no Triton")
    torch.manual_seed(0)
    B, D, block_size, num_blocks = 6, 64, 16, 48
    k_cache = torch.randn(num_blocks, block_size, kv_heads, D, device="cuda", dtype=torch.float16)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(B, heads, D, device="cuda", dtype=torch.float16)
    lens = torch.tensor([1, 15, 16, 17, 100, 128], device="cuda")  # tile edges, a full table
    tables = torch.randperm(num_blocks, device="cuda")[: B * 8].view(B, 8)
    if launch is not None:
        splits, tile, chunk, stages = launch
        launch = paged_attention.Launch(splits, tile, paged_attention.WARPS, chunk, stages)
    out = paged_attention.decode(q, k_cache, v_cache, tables, lens, launch)
    keys = k_cache[tables].view(B, 8 * block_size, kv_heads, D).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    values = v_cache[tables].view(B, 8 * block_size, kv_heads, D).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    mask = (torch.arange(8 * block_size, device="cuda")[None, :] < lens[:, None])[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, :, None].float(), keys.float(), values.float(),
                                                           attn_mask=mask)[:, :, 0]
    assert (out.float() - ref).abs().max().item() < 2e-3


def test_paged_decode_merges_in_the_last_split_and_leaves_the_counters_at_zero():
    from qwen_triton.models import paged_attention

    if paged_attention.triton is None:
        pytest.skip("no Triton")
    torch.manual_seed(0)
    B, H, D, block_size = 4, 8, 64, 16
    k_cache = torch.randn(64, block_size, H, D, device="cuda", dtype=torch.float16)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(B, H, D, device="cuda", dtype=torch.float16)
    lens = torch.tensor([1, 40, 200, 256], device="cuda")  # one split, a few, all
    tables = torch.randperm(64, device="cuda")[: B * 16].view(B, 16)
    launches = [paged_attention.Launch(8, 32, paged_attention.WARPS), paged_attention.Launch(4, 16, 2, 1, 2)]
    for launch in launches:
        first = paged_attention.decode(q, k_cache, v_cache, tables, lens, launch)
        for _ in range(3):  # each launch starts from the counters the one before left
            assert torch.equal(paged_attention.decode(q, k_cache, v_cache, tables, lens, launch), first)
        assert int(paged_attention.split_counters(q.device, B * H).abs().sum()) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_rms_norm_and_rope_with_cache_write_match_the_torch_expressions(dtype):
    from qwen_triton.models import fused_ops
    from qwen_triton.models.qwen import rope_cos_sin

    if fused_ops.triton is None:
        pytest.skip("no Triton")
    torch.manual_seed(0)
    x = torch.randn(7, 4096, device="cuda", dtype=dtype) * 3
    weight = torch.randn(4096, device="cuda", dtype=dtype)
    x32 = x.float()
    ref = weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
    got = fused_ops.rms_norm(x, weight, 1e-6)
    eps = torch.finfo(dtype).eps
    assert torch.allclose(got.float(), ref.float(), rtol=2 * eps, atol=0)  # within one rounding step

    T, H, Hkv, D = 7, 32, 8, 128  # GQA, so the kv-head programs are a subset
    qkv = torch.randn(T, (H + 2 * Hkv) * D, device="cuda", dtype=dtype)
    cos, sin = rope_cos_sin(torch.arange(100, 100 + T, device="cuda"), D, 10000.0, dtype)
    k_cache, v_cache = (torch.zeros(4, 16, Hkv, D, device="cuda", dtype=dtype) for _ in range(2))
    slots = torch.tensor([3, 17, 63, 0, 40, 41, 22], device="cuda")
    q, k, v = fused_ops.rope_write_kv(qkv, H, Hkv, cos, sin, slots, k_cache, v_cache)

    def rotated(x):
        return x * cos + torch.cat((-x[..., D // 2:], x[..., :D // 2]), dim=-1) * sin

    # Within one rounding step of the operands (|x * cos| < 16 here), not bit-identical: Triton's and torch's
    # float16 arithmetic differ in the last bit for about a fifth of the elements.
    for got, x in ((q, qkv[:, :H * D].view(T, H, D)), (k, qkv[:, H * D:(H + Hkv) * D].view(T, Hkv, D))):
        assert torch.allclose(got.float(), rotated(x).float(), rtol=2 * eps, atol=16 * eps)
    assert torch.equal(v, qkv[:, (H + Hkv) * D:].view(T, Hkv, D))
    assert torch.equal(k_cache.view(-1, Hkv, D)[slots], k) and torch.equal(v_cache.view(-1, Hkv, D)[slots], v)
    written = torch.zeros(64, dtype=torch.bool, device="cuda")
    written[slots] = True
    assert not k_cache.view(64, -1)[~written].any() and not v_cache.view(64, -1)[~written].any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_add_rms_norm_and_silu_mul_match_the_torch_expressions(dtype):
    from qwen_triton.models import fused_ops

    if fused_ops.triton is None:
        pytest.skip("no Triton")
    torch.manual_seed(0)
    x, residual = (torch.randn(5, 4096, device="cuda", dtype=dtype) * 3 for _ in range(2))
    weight = torch.randn(4096, device="cuda", dtype=dtype)
    normed, total = fused_ops.add_rms_norm(x, residual, weight, 1e-6)
    assert torch.equal(total, x + residual)  # the same single rounding as torch's add
    t32 = total.float()
    ref = weight * (t32 * torch.rsqrt(t32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
    eps = torch.finfo(dtype).eps
    assert torch.allclose(normed.float(), ref.float(), rtol=2 * eps, atol=0)

    gate_up = torch.randn(5, 2 * 11008, device="cuda", dtype=dtype) * 4
    gate, up = gate_up.chunk(2, dim=-1)
    ref = torch.nn.functional.silu(gate) * up
    assert torch.allclose(fused_ops.silu_mul(gate_up).float(), ref.float(), rtol=4 * eps, atol=4 * eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 16, 17, 64])
@pytest.mark.parametrize("launch", [None, (4, 1024, 1, 4), (32, 128, 4, 4), (16, 64, 3, 8)])
def test_gemv_matches_cublas_within_rounding(dtype, rows, launch):
    from qwen_triton.models import gemv

    if gemv.triton is None or (launch and rows > 1 and launch[0] < 16):
        pytest.skip("no Triton" if gemv.triton is None else "tensor-core tiles need 16 rows")
    torch.manual_seed(0)
    for n, k, with_bias in ((4096, 4096, False), (300, 1000, True), (8, 64, True)):  # odd sizes: masked edges
        x = torch.randn(rows, k, device="cuda", dtype=dtype)
        weight = torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5
        bias = torch.randn(n, device="cuda", dtype=dtype) if with_bias else None
        ref = torch.nn.functional.linear(x.float(), weight.float(), None if bias is None else bias.float())
        got = gemv.linear(x, weight, bias, launch=launch)
        assert got.shape == (rows, n) and got.dtype == dtype
        # fp32 sums in another order than cuBLAS: within a rounding step of the exact result (|y| < ~6)
        assert (got.float() - ref).abs().max().item() <= 8 * torch.finfo(dtype).eps


def test_split_k_sums_in_each_tiles_last_split_and_leaves_the_counters_at_zero():
    """gemv.split_k's kernels (the 16-bit GEMV, int4's one-row PTX GEMV, fp8's W8A8 rows) with K split: the last
    program of each output tile sums the partials (gemv.store_tile). Repeated calls start from the counters the
    call before left, so a counter left counting would leave later outputs unwritten."""
    from qwen_triton.models import counters, fp8_gemm, gemv, quant_gemv
    from qwen_triton.tools.quantize import quantize_fp8, quantize_int4

    if gemv.triton is None:
        pytest.skip("no Triton")
    torch.manual_seed(0)
    w = torch.randn(4096, 11008, device="cuda") / 11008 ** 0.5
    q4, s4, z4 = quantize_int4(w, 128)
    q8, s8 = quantize_fp8(w)
    calls = [lambda x: gemv.linear(x, w.half(), None, launch=(32, 128, 4, 4)),
             lambda x: quant_gemv.linear_int4(x[:1], q4, s4, z4),  # row_gemv, K split in 8
             lambda x: fp8_gemm.linear_rows(x, q8, s8, launch=(64, 64, 256, 3, 4, 3))]
    if torch.cuda.get_device_capability() < (8, 9):
        calls.pop()  # fp8 needs compute capability 8.9+
    x = torch.randn(40, 11008, device="cuda", dtype=torch.float16)
    for call in calls:
        first = call(x)
        for _ in range(3):
            assert torch.equal(call(x), first)
    torch.cuda.synchronize()
    assert int(counters.split_counters(x.device, 1).abs().sum()) == 0


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cuda_models_are_loaded_with_the_triton_ops_and_decode_through_the_gemv_in_half_precision(
        folder, prompts, dtype, monkeypatch):
    from qwen_triton.models import fused_ops, gemv, ops, paged_attention

    if not ops.TRITON:
        pytest.skip("no Triton")
    on_cpu = ModelRunner(folder, device="cpu").model.ops  # the torch set (with the CPU's quantized matmuls)
    assert on_cpu.name == "torch" and on_cpu.linear is torch.nn.functional.linear and not on_cpu.paged_decode
    runner = ModelRunner(folder, device="cuda", dtype=dtype, use_cuda_graphs=False)  # eager: each call is seen
    selected = runner.model.ops
    assert selected.name == "triton" and selected.paged_decode
    assert (selected.rms_norm, selected.add_rms_norm, selected.rope_write_kv, selected.silu_mul) == (
        fused_ops.rms_norm, fused_ops.add_rms_norm, fused_ops.rope_write_kv, fused_ops.silu_mul)
    assert selected.decode_attention is paged_attention.decode
    half = dtype == "float16"
    assert selected.linear is (ops.small_batch_linear if half else torch.nn.functional.linear)
    seq = Sequence(list(prompts[0]), SamplingParams())
    seq.block_table = list(range(32))
    logits = runner.execute(ScheduleOutput(prefill=(seq,)))
    seq.num_cached_tokens = len(seq)
    seq.output_ids.append(int(logits[0].argmax()))
    gemv_rows = []
    linear = gemv.linear
    monkeypatch.setattr(gemv, "linear", lambda x, *args: gemv_rows.append(x.shape[0]) or linear(x, *args))
    runner.execute(ScheduleOutput(decode=(seq,)))
    # A one-row decode step: every linear layer (4 per decoder layer) and the logits, through the GEMV
    expected = 4 * runner.config.model.num_hidden_layers + 1 if half else 0
    assert gemv_rows == [1] * expected
