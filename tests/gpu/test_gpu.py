"""On a CUDA device: decode through the captured CUDA graphs gives the same greedy tokens and logits as
eager decode on the same weights (skipped without a GPU)."""
import pytest
import torch

from qwen_triton.config import EngineLimits
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.request import SamplingParams, Sequence
from qwen_triton.runtime.schedule import ScheduleOutput
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
LIMITS = EngineLimits(dtype="float32", max_batch_size=8, max_input_len=128, max_seq_len=512, block_size=16)
PROMPTS = [[151644, 8948, 198, 2610, 525, 264], [9707, 11, 1879], list(range(1000, 1040))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    make_random_checkpoint(root / "hf", "qwen2", seed=5)
    return convert_checkpoint(root / "hf", root / "engine", LIMITS)


def _greedy(runner, steps=32):
    seqs = [Sequence(list(p), SamplingParams()) for p in PROMPTS]
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(32 * i, 32 * i + 32))
    logits = runner.execute(ScheduleOutput(prefill=tuple(seqs)))
    history = []
    for _ in range(steps):
        for seq, row in zip(seqs, logits):
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(int(row.argmax()))
        logits = runner.execute(ScheduleOutput(decode=tuple(seqs)))
        history.append(logits.cpu())
    return [s.output_ids for s in seqs], torch.stack(history)


@pytest.mark.parametrize("dtype", ["float32", "float16"])  # float16 decode goes through the Triton GEMV
def test_cuda_graph_decode_matches_eager(folder, dtype):
    graphed = ModelRunner(folder, device="cuda", dtype=dtype)
    eager = ModelRunner(folder, device="cuda", dtype=dtype, use_cuda_graphs=False)
    assert graphed.graphs is not None and eager.graphs is None
    tokens_g, logits_g = _greedy(graphed)
    tokens_e, logits_e = _greedy(eager)
    assert tokens_g == tokens_e
    assert (logits_g - logits_e).abs().max().item() < (1e-3 if dtype == "float32" else 1e-2)


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


def test_engine_overlap_gives_the_same_tokens_as_serial_steps(folder):
    from qwen_triton.runtime.engine import Engine

    runner = ModelRunner(folder, device="cuda", dtype="float32")

    def serve(overlap):
        engine = Engine(runner, LIMITS, overlap=overlap)
        outputs = [[] for _ in PROMPTS]
        for i, prompt in enumerate(PROMPTS):
            sink = lambda event, out=outputs[i]: out.extend(event.new_token_ids) or True  # noqa: E731
            engine.submit(list(prompt), SamplingParams(max_tokens=40 + 7 * i), sink)
        while engine.step():
            pass
        assert engine.stats().free_kv_blocks == runner.num_kv_blocks
        return outputs

    serial, overlapped = serve(False), serve(True)
    assert overlapped == serial and [len(o) for o in serial] == [40, 47, 54]


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


def test_overlapped_decode_steps_never_wait_for_the_device(folder):
    """The launch of a step (runner inputs, graph replay, min-tokens mask, argmax) makes no blocking CUDA call:
    one would wait for the step in flight and the host work would no longer overlap the GPU."""
    from qwen_triton.runtime.engine import Engine

    runner = ModelRunner(folder, device="cuda", dtype="float32")
    engine = Engine(runner, LIMITS)
    launches = {"decode": 0}
    execute, sample = runner.execute, engine.sampler.sample_on_device

    def strict(fn, kind=None):
        def call(schedule_or_logits, *args):
            if kind is not None:
                launches[kind] += not schedule_or_logits.is_prefill
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(schedule_or_logits, *args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return call

    runner.execute, engine.sampler.sample_on_device = strict(execute, "decode"), strict(sample)
    outputs = []
    engine.submit(list(PROMPTS[0]), SamplingParams(max_tokens=24, min_tokens=20), lambda e: outputs.append(e) or True)
    while engine.step():
        pass
    assert [e.error for e in outputs if e.error] == [] and outputs[-1].num_output_tokens == 24
    assert launches["decode"] >= 22


@pytest.mark.parametrize("prompt_len", [1, 16, 17, 100])  # bucket edges; 100 is padded to 128
def test_prefill_graph_matches_eager_prefill_and_decodes_the_same(folder, prompt_len):
    graphed = ModelRunner(folder, device="cuda", dtype="float32")
    eager = ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False)
    assert graphed.prefill_graphs.bucket(prompt_len) is not None
    results = []
    for runner in (graphed, eager):
        seq = Sequence(list(range(500, 500 + prompt_len)), SamplingParams())
        seq.block_table = list(range(32))
        history = [runner.execute(ScheduleOutput(prefill=(seq,)))]
        for _ in range(8):  # decoding reads the K/V the prefill wrote
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(int(history[-1][0].argmax()))
            history.append(runner.execute(ScheduleOutput(decode=(seq,))))
        results.append((seq.output_ids, torch.cat(history).cpu()))
    written = slice(0, (prompt_len + 8 + 15) // 16)  # blocks holding the prompt and the 8 decoded tokens
    kv_diff = (graphed.kv_cache[:, :, written] - eager.kv_cache[:, :, written]).abs()  # (L, 2, blocks, 16, H, D)
    assert kv_diff.max().item() < 1e-4  # padding went to the scratch slot, nowhere else
    (tokens_g, logits_g), (tokens_e, logits_e) = results
    diffs = (logits_g - logits_e).abs().amax(dim=-1).tolist()  # per step: prefill, then decodes
    assert max(diffs) < 1e-3, f"logits diff per step {diffs}"
    assert tokens_g == tokens_e


def test_several_prompts_prefilled_by_graph_replays_match_one_eager_batch(folder):
    graphed = ModelRunner(folder, device="cuda", dtype="float32")
    eager = ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False)
    logits = []
    for runner in (graphed, eager):
        seqs = [Sequence(list(p), SamplingParams()) for p in PROMPTS]
        for i, seq in enumerate(seqs):
            seq.block_table = list(range(32 * i, 32 * i + 32))
        logits.append(runner.execute(ScheduleOutput(prefill=tuple(seqs))).cpu())
    assert logits[0].shape == (len(PROMPTS), graphed.config.model.vocab_size)
    assert (logits[0] - logits[1]).abs().max().item() < 1e-3  # each row is its own sequence's last token
    written = slice(0, 32 * len(PROMPTS))
    assert (graphed.kv_cache[:, :, written] - eager.kv_cache[:, :, written]).abs().max().item() < 1e-4


def _decoding_then(runner, mixed: bool, prompt_len: int):
    """PROMPTS prefilled and one token each, then a step with their decodes and a new prompt (mixed or as a
    decode step and a prefill step): logits rows in schedule order, and the K/V cache."""
    seqs = [Sequence(list(p), SamplingParams()) for p in PROMPTS]
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(32 * i, 32 * i + 32))
    for seq, row in zip(seqs, runner.execute(ScheduleOutput(prefill=tuple(seqs)))):
        seq.num_cached_tokens = len(seq)
        seq.output_ids.append(int(row.argmax()))
    new = Sequence(list(range(500, 500 + prompt_len)), SamplingParams())
    new.block_table = list(range(96, 128))
    if mixed:
        logits = runner.execute(ScheduleOutput(prefill=(new,), decode=tuple(seqs)))
    else:
        logits = torch.cat((runner.execute(ScheduleOutput(decode=tuple(seqs))),
                            runner.execute(ScheduleOutput(prefill=(new,)))))
    return logits.cpu(), runner.kv_cache[:, :, :128].cpu()


@pytest.mark.parametrize("prompt_len", [1, 40, 128])
def test_mixed_step_graph_matches_a_decode_step_and_a_prefill_step(folder, prompt_len):
    graphed = ModelRunner(folder, device="cuda", dtype="float32")
    assert graphed.mixed_prefill_tokens == LIMITS.max_input_len  # the paged kernel allows mixed graphs
    eager = ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False)
    mixed_g, kv_g = _decoding_then(graphed, True, prompt_len)
    mixed_e, kv_e = _decoding_then(eager, True, prompt_len)
    separate, kv_s = _decoding_then(eager, False, prompt_len)
    assert mixed_g.shape == (len(PROMPTS) + 1, graphed.config.model.vocab_size)
    for got in (mixed_g, mixed_e):
        assert (got - separate).abs().max().item() < 1e-3
    assert (kv_g - kv_s).abs().max().item() < 1e-4 and (kv_e - kv_s).abs().max().item() < 1e-4


def test_engine_with_mixed_steps_gives_the_eager_engines_tokens(folder):
    from qwen_triton.runtime.engine import Engine

    def serve(runner):
        engine = Engine(runner, LIMITS)
        outputs = [[] for _ in PROMPTS]
        mixed = []
        schedule = engine.scheduler.schedule
        engine.scheduler.schedule = lambda: (out := schedule(), mixed.append(out.is_mixed))[0]
        for i, prompt in enumerate(PROMPTS):  # each joins a running batch
            sink = lambda event, out=outputs[i]: out.extend(event.new_token_ids) or True  # noqa: E731
            engine.submit(list(prompt), SamplingParams(max_tokens=30), sink)
            for _ in range(3):
                engine.step()
        while engine.step():
            pass
        return outputs, sum(mixed)

    graphed, mixed_steps = serve(ModelRunner(folder, device="cuda", dtype="float32"))
    eager, eager_mixed = serve(ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False))
    assert graphed == eager and [len(o) for o in eager] == [30] * len(PROMPTS)
    assert mixed_steps == len(PROMPTS) - 1 and eager_mixed == 0
