"""Our model (paged cache, flattened batches) vs transformers' Qwen2ForCausalLM on the same tiny random
weights, float32: logits within 1e-4 and 32 identical greedy tokens, for a Qwen2 GQA+tied checkpoint and
for a v1-layout (Qwen-7B-Chat) checkpoint converted by build/."""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_triton.config import EngineLimits
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.request import SamplingParams, Sequence
from qwen_triton.runtime.schedule import ScheduleOutput
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import TINY, make_random_checkpoint, qwen2_config, qwen2_state_dict

LIMITS = EngineLimits(dtype="float32", max_batch_size=4, max_input_len=128, max_seq_len=256, block_size=16)
PROMPTS = ([151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 108386, 151645],
           [9707, 11, 1879, 0, 220, 16, 17, 18])


@pytest.fixture(scope="module", params=["qwen2", "qwen"])
def pair(request, tmp_path_factory):
    flavour = request.param
    root = tmp_path_factory.mktemp(flavour)
    make_random_checkpoint(root / "hf", flavour, seed=3)
    folder = convert_checkpoint(root / "hf", root / "engine", LIMITS)
    # Reference: transformers Qwen2 holding the generator's Qwen2-named weights (for v1: the same
    # numbers the v1 file stores under v1 names).
    config = qwen2_config(TINY, flavour)
    reference = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="eager")).eval()
    reference.load_state_dict(qwen2_state_dict(config, seed=3), strict=not config["tie_word_embeddings"])
    return ModelRunner(folder, device="cpu"), reference


def _with_blocks(seq, first_block, n_blocks=16):
    seq.block_table = list(range(first_block, first_block + n_blocks))
    return seq


def _decode_loop(runner, seqs, steps):
    """Prefill then greedy decode with our runner; returns per-step logits (steps, B, V) and tokens."""
    logits = runner.execute(ScheduleOutput(prefill=tuple(seqs)))
    history = [logits]
    for _ in range(steps):
        for seq, row in zip(seqs, logits):
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(int(row.argmax()))
        logits = runner.execute(ScheduleOutput(decode=tuple(seqs)))
        history.append(logits)
    return torch.stack(history), [s.output_ids for s in seqs]


@torch.inference_mode()
def test_logits_and_greedy_tokens_match_transformers(pair):
    runner, reference = pair
    seq = _with_blocks(Sequence(list(PROMPTS[0]), SamplingParams()), 0)
    ours, (tokens,) = _decode_loop(runner, [seq], steps=32)
    full = torch.tensor([list(PROMPTS[0]) + tokens])
    ref_logits = reference(full).logits[0, len(PROMPTS[0]) - 1:]  # (33, V): logits after each prefix
    assert (ours[:, 0] - ref_logits).abs().max().item() < 1e-4
    ref_tokens = reference.generate(torch.tensor([list(PROMPTS[0])]), max_new_tokens=32, do_sample=False,
                                    min_new_tokens=32, eos_token_id=None, pad_token_id=0)[0, len(PROMPTS[0]):]
    assert tokens == ref_tokens.tolist()


@torch.inference_mode()
def test_batched_ragged_sequences_match_each_alone(pair):
    runner, _ = pair
    alone = [_decode_loop(runner, [_with_blocks(Sequence(list(p), SamplingParams()), 0)], steps=6)[0][:, 0]
             for p in PROMPTS]
    seqs = [_with_blocks(Sequence(list(p), SamplingParams()), 16 * i) for i, p in enumerate(PROMPTS)]
    together, _ = _decode_loop(runner, seqs, steps=6)
    for i in range(len(PROMPTS)):
        assert (together[:, i] - alone[i]).abs().max().item() < 1e-4
