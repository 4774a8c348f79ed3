"""On a CUDA device: decode, prefill and mixed steps through the captured CUDA graphs give the same greedy
tokens, logits and K/V cache as eager steps on the same weights (skipped without a GPU)."""
import pytest
import torch

from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams, Sequence
from qwen_triton.runtime.schedule_output import ScheduleOutput

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _greedy(runner, prompts, steps=32):
    seqs = [Sequence(list(p), SamplingParams()) for p in prompts]
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
def test_cuda_graph_decode_matches_eager(folder, prompts, dtype):
    graphed = ModelRunner(folder, device="cuda", dtype=dtype)
    eager = ModelRunner(folder, device="cuda", dtype=dtype, use_cuda_graphs=False)
    assert graphed.graphs is not None and eager.graphs is None
    tokens_g, logits_g = _greedy(graphed, prompts)
    tokens_e, logits_e = _greedy(eager, prompts)
    assert tokens_g == tokens_e
    assert (logits_g - logits_e).abs().max().item() < (1e-3 if dtype == "float32" else 1e-2)


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


def test_several_prompts_prefilled_by_graph_replays_match_one_eager_batch(folder, prompts):
    graphed = ModelRunner(folder, device="cuda", dtype="float32")
    eager = ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False)
    logits = []
    for runner in (graphed, eager):
        seqs = [Sequence(list(p), SamplingParams()) for p in prompts]
        for i, seq in enumerate(seqs):
            seq.block_table = list(range(32 * i, 32 * i + 32))
        logits.append(runner.execute(ScheduleOutput(prefill=tuple(seqs))).cpu())
    assert logits[0].shape == (len(prompts), graphed.config.model.vocab_size)
    assert (logits[0] - logits[1]).abs().max().item() < 1e-3  # each row is its own sequence's last token
    written = slice(0, 32 * len(prompts))
    assert (graphed.kv_cache[:, :, written] - eager.kv_cache[:, :, written]).abs().max().item() < 1e-4


def _decoding_then(runner, prompts, mixed: bool, prompt_len: int):
    """The prompts prefilled and one token each, then a step with their decodes and a new prompt (mixed or as a
    decode step and a prefill step): logits rows in schedule order, and the K/V cache."""
    seqs = [Sequence(list(p), SamplingParams()) for p in prompts]
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
def test_mixed_step_graph_matches_a_decode_step_and_a_prefill_step(folder, limits, prompts, prompt_len):
    graphed = ModelRunner(folder, device="cuda", dtype="float32")
    assert graphed.mixed_prefill_tokens == limits.max_input_len  # the paged kernel allows mixed graphs
    eager = ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False)
    mixed_g, kv_g = _decoding_then(graphed, prompts, True, prompt_len)
    mixed_e, kv_e = _decoding_then(eager, prompts, True, prompt_len)
    separate, kv_s = _decoding_then(eager, prompts, False, prompt_len)
    assert mixed_g.shape == (len(prompts) + 1, graphed.config.model.vocab_size)
    for got in (mixed_g, mixed_e):
        assert (got - separate).abs().max().item() < 1e-3
    assert (kv_g - kv_s).abs().max().item() < 1e-4 and (kv_e - kv_s).abs().max().item() < 1e-4
