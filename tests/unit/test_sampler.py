"""Sampler: greedy, padding never sampled, penalties, min_tokens, bad words, seeds independent of batch."""
import torch

from qwen_triton.runtime.sequence import SamplingParams, Sequence
from qwen_triton.runtime.sampler import Sampler
from qwen_triton.vocab import NUM_TOKENIZER_IDS, PADDED_VOCAB_SIZE

V = PADDED_VOCAB_SIZE


def seq(prompt=(1, 2, 3), outputs=(), **params):
    s = Sequence(list(prompt), SamplingParams(**params))
    s.output_ids = list(outputs)
    return s


def logits(*rows):
    out = torch.full((len(rows), V), -10.0)
    for i, row in enumerate(rows):
        for token, value in row.items():
            out[i, token] = value
    return out


def test_greedy_is_argmax_and_padding_never_wins():
    sampler = Sampler()
    assert sampler.sample(logits({5: 3.0, NUM_TOKENIZER_IDS + 3: 99.0}), [seq()]) == [5]
    hot = torch.zeros(1, V)
    hot[0, NUM_TOKENIZER_IDS:] = 1e4
    assert all(t < NUM_TOKENIZER_IDS for t in sampler.sample(hot.repeat(20, 1), [seq(temperature=1.0) for _ in range(20)]))


def test_top_k_one_and_tiny_top_p_are_greedy():
    sampler = Sampler()
    rows = logits({5: 3.0, 6: 2.9}, {5: 3.0, 6: 2.9})
    assert sampler.sample(rows, [seq(temperature=1.0, top_k=1), seq(temperature=1.0, top_p=1e-6)]) == [5, 5]


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    s = seq(prompt=(5, 6), repetition_penalty=2.0)
    row = logits({5: 4.0, 6: -1.0, 7: 3.0})[0]
    Sampler._apply_penalties(row, s)
    assert row[5].item() == 2.0 and row[6].item() == -2.0 and row[7].item() == 3.0


def test_presence_and_frequency_penalties_use_output_counts():
    s = seq(prompt=(9,), outputs=(5, 5, 6), presence_penalty=0.5, frequency_penalty=0.25)
    row = logits({5: 1.0, 6: 1.0, 9: 1.0})[0]
    Sampler._apply_penalties(row, s)
    assert row[5].item() == 1.0 - 0.5 - 0.5 and row[6].item() == 1.0 - 0.5 - 0.25 and row[9].item() == 1.0


def test_min_tokens_masks_stop_tokens():
    sampler = Sampler()
    rows = logits({151645: 9.0, 7: 1.0})
    assert sampler.sample(rows, [seq(min_tokens=2, max_tokens=4)]) == [7]
    assert sampler.sample(rows, [seq(outputs=(1, 2), min_tokens=2, max_tokens=4)]) == [151645]


def test_bad_words_single_and_multi_token():
    sampler = Sampler()
    rows = logits({5: 9.0, 6: 8.0, 7: 1.0})
    assert sampler.sample(rows, [seq(bad_words_ids=((5,),))]) == [6]
    assert sampler.sample(rows, [seq(outputs=(4,), bad_words_ids=((4, 5), (3, 6)))]) == [6]  # only (4, 5) applies


def test_seed_gives_the_same_tokens_alone_or_in_a_batch():
    torch.manual_seed(0)
    noise = torch.randn(3, V)

    def draw(batch_rows, seqs, steps=5):
        sampler, out = Sampler(), []
        for _ in range(steps):
            out.append(sampler.sample(noise[batch_rows], seqs)[0])
        return out

    alone = draw([0], [seq(temperature=1.0, seed=42)])
    batched = draw([0, 1, 2], [seq(temperature=1.0, seed=42), seq(temperature=0.7), seq(temperature=1.3, seed=1)])
    other_seed = draw([0], [seq(temperature=1.0, seed=43)])
    assert alone == batched and alone != other_seed


def test_generators_are_released():
    sampler = Sampler()
    s = seq(temperature=1.0)
    sampler.sample(logits({1: 1.0}), [s])
    assert sampler.num_generators == 1
    sampler.release(s.seq_id)
    assert sampler.num_generators == 0


def test_plain_greedy_fast_path_agrees_with_the_general_path():
    torch.manual_seed(1)
    rows = torch.randn(4, V)
    rows[:, NUM_TOKENIZER_IDS:] = 50.0  # padding must lose on the fast path too
    plain = [seq() for _ in range(4)]
    general = [seq(presence_penalty=1e-9) for _ in range(4)]  # forces the row-by-row path
    assert Sampler().sample(rows, plain) == Sampler().sample(rows, general)
    assert all(t < NUM_TOKENIZER_IDS for t in Sampler().sample(rows, plain))


def test_fast_path_respects_min_tokens():
    rows = logits({151645: 9.0, 7: 1.0}, {151645: 9.0, 7: 1.0})
    assert Sampler().sample(rows, [seq(min_tokens=2, max_tokens=4), seq(outputs=(1, 2), min_tokens=2, max_tokens=4)]) \
        == [7, 151645]


def test_indexed_bad_words_ban_exactly_what_the_word_by_word_rule_bans():
    import random

    from qwen_triton.engine_api import BannedWords

    rng = random.Random(0)
    words = tuple(tuple(rng.randrange(6) for _ in range(rng.randrange(1, 4))) for _ in range(40))
    banned = BannedWords(words)
    for _ in range(200):
        output = [rng.randrange(6) for _ in range(rng.randrange(0, 5))]
        naive = {w[-1] for w in words if len(output) >= len(w) - 1 and output[len(output) - len(w) + 1:] == list(w[:-1])}
        assert set(banned.banned(output)) == naive


def test_temperatures_too_small_to_divide_by_sample_greedily():
    rows = torch.zeros(1, PADDED_VOCAB_SIZE)
    rows[0, 5] = 3.0
    for temperature in (1e-45, 1e-8):
        assert Sampler().sample(rows, [seq(temperature=temperature, seed=0)]) == [5]


def test_every_bit_of_a_uint64_seed_counts():
    torch.manual_seed(0)
    rows = torch.randn(1, PADDED_VOCAB_SIZE)

    def draw(seed):
        sampler = Sampler()
        s = seq(temperature=1.0, seed=seed)
        return [sampler.sample(rows, [s])[0] for _ in range(8)]

    assert draw(2**64 - 1) != draw(2**63 - 1)
    assert draw(5) != draw(2**40 + 5)  # torch's CPU generator would keep the low 32 bits only
    assert draw(2**64 - 1) == draw(2**64 - 1)
