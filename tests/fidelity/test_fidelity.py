"""Our model through ModelRunner (paged KV cache, flattened varlen batches) against transformers' Qwen2ForCausalLM
on the same tiny random weights, float32 CPU: logits within 1e-4 and 32 identical greedy tokens, for a Qwen2
GQA + tied checkpoint and a v1 (Qwen-7B-Chat layout) checkpoint converted by build/; batched equals alone."""
import pytest
import torch

from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.engine_api import SamplingParams
from qwen_triton.runtime.sequence import Sequence
from qwen_triton.runtime.schedule_output import ScheduleOutput

TOL = 1e-4
# ChatML prompt of 21 tokens (crosses a 16-token block boundary) and a short plain one.
PROMPT = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
          151644, 872, 198, 108386, 3837, 104169, 151645, 198, 151644, 77091]
SHORT = [9707, 11, 1879, 0, 220, 16, 17]


def _sequence(prompt: list[int], blocks: list[int]) -> Sequence:
    seq = Sequence(list(prompt), SamplingParams())
    seq.block_table = list(blocks)  # the scheduler's job in the engine; enough for every step below
    return seq


def _commit(seq: Sequence, token: int) -> None:
    # What the engine does after a step: everything computed so far is cached, then the token is appended.
    seq.num_cached_tokens = len(seq)
    seq.output_ids.append(token)


def _run(runner: ModelRunner, seqs: list[Sequence], steps: int, forced: list[list[int]] | None = None):
    """Prefill, then `steps` decode steps feeding each sequence its greedy token (or forced[i][step]).
    Returns logits (steps + 1, B, V) and the tokens fed."""
    logits = runner.execute(ScheduleOutput(prefill=tuple(seqs)))
    history = [logits]
    for step in range(steps):
        for i, (seq, row) in enumerate(zip(seqs, logits)):
            _commit(seq, forced[i][step] if forced else int(row.argmax()))
        logits = runner.execute(ScheduleOutput(decode=tuple(seqs)))
        history.append(logits)
    return torch.stack(history), [list(s.output_ids) for s in seqs]


def _hf_greedy(reference, prompt: list[int], steps: int) -> list[int]:
    # A plain loop over full forwards: no KV cache and no generation_config (the checkpoint's sampling
    # defaults, repetition penalty included, must not leak into a greedy reference).
    ids = list(prompt)
    for _ in range(steps):
        logits = reference(torch.tensor([ids]), logits_to_keep=1).logits  # (1, 1, V): the head on the last row only
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


@torch.inference_mode()
def test_layouts_are_what_they_claim(qwen2_case, v1_case):
    q2, v1 = qwen2_case.engine.config.model, v1_case.engine.config.model
    assert q2.num_key_value_heads < q2.num_attention_heads and q2.tie_word_embeddings
    assert v1.num_key_value_heads == v1.num_attention_heads and not v1.tie_word_embeddings
    assert v1.intermediate_size == v1_case.reference.config.intermediate_size


@torch.inference_mode()
def test_logits_and_32_greedy_tokens_match_transformers(case, runners):
    runner = runners(case)
    ours, (tokens,) = _run(runner, [_sequence(PROMPT, range(4))], steps=32)  # 21 + 32 tokens: 4 blocks
    # Reference logits along our token path: position len(PROMPT) - 1 + k predicts output token k.
    full = torch.tensor([PROMPT + tokens])
    expected = case.reference(full).logits[0, len(PROMPT) - 1:]  # (33, V)
    assert (ours[:, 0] - expected).abs().max().item() < TOL
    assert tokens == _hf_greedy(case.reference, PROMPT, 32)


@torch.inference_mode()
def test_batched_ragged_sequences_match_each_alone(case, runners):
    runner = runners(case)
    forced = [[(7919 * (i + 1) + 31 * k) % 151000 for k in range(12)] for i in range(2)]  # fixed continuations
    # Scattered, interleaved blocks and unequal table widths: SHORT (7 -> 19 tokens) crosses into its
    # second block during decode; PROMPT (21 -> 33) into its third.
    tables = [[9, 4, 12], [2, 7]]
    prompts = [PROMPT, SHORT]
    alone = [_run(runner, [_sequence(p, [20 + b for b in t])], 12, [f])[0][:, 0]
             for p, t, f in zip(prompts, tables, forced)]
    together, _ = _run(runner, [_sequence(p, t) for p, t in zip(prompts, tables)], 12, forced)
    for i in range(2):
        assert (together[:, i] - alone[i]).abs().max().item() < TOL


@torch.inference_mode()
def test_recomputed_prefill_equals_decode(case, runners):
    # A preempted sequence comes back as one prefill of prompt + outputs; its logits equal the decode path's.
    runner = runners(case)
    decoded, (tokens,) = _run(runner, [_sequence(SHORT, [5, 6])], steps=10)
    again = _sequence(SHORT, [1, 3])
    again.output_ids = list(tokens)  # the last decode step computed its last token, at position len(SHORT) + 9
    recomputed = runner.execute(ScheduleOutput(prefill=(again,)))
    assert (recomputed[0] - decoded[-1, 0]).abs().max().item() < TOL


@torch.inference_mode()
def test_bfloat16_on_cpu_tracks_float32(qwen2_case, runners):
    exact = runners(qwen2_case)
    half = ModelRunner(qwen2_case.engine, device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and half.kv_cache.dtype == torch.bfloat16
    forced = [[1000 + k for k in range(6)]]
    ref, _ = _run(exact, [_sequence(PROMPT, [0, 1])], 6, forced)
    got, _ = _run(half, [_sequence(PROMPT, [0, 1])], 6, forced)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@torch.inference_mode()
def test_cuda_half_precision_tracks_cpu_float32(case, runners, dtype):
    exact = runners(case)
    gpu = ModelRunner(case.engine, device="cuda", dtype=dtype)
    forced = [[(7919 * (i + 1) + 31 * k) % 151000 for k in range(12)] for i in range(2)]
    tables = [[9, 4, 12], [2, 7]]
    ref, _ = _run(exact, [_sequence(p, t) for p, t in zip([PROMPT, SHORT], tables)], 12, forced)
    got, _ = _run(gpu, [_sequence(p, t) for p, t in zip([PROMPT, SHORT], tables)], 12, forced)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert (got.cpu() - ref).abs().max().item() < 0.05 * ref.abs().max().item()
