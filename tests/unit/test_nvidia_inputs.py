"""tensorrtllm_backend's inputs where requests enter: neutral values accepted, others refused by name; old
names resolved; embedding bias and log-probabilities computed as documented."""
import numpy as np
import pytest
import torch

from qwen_triton.config import load_engine_folder
from qwen_triton.errors import InvalidRequest
from qwen_triton.runtime.sequence import Sequence, SamplingParams
from qwen_triton.runtime.sampler import Sampler
from qwen_triton.schema import NEUTRAL_ENSEMBLE, NEUTRAL_TENSORRT_LLM
from qwen_triton.serving.logprobs import TokenLogProbs
from qwen_triton.serving.preprocess import Preprocessor
from qwen_triton.serving.chat_request import ChatRequest
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.text.tokenizer import QwenTokenizer


def chat(**values):
    return ChatRequest.from_inputs({"text_input": np.array([b"hi"], dtype=object), **values})


def llm(**values):
    return LLMRequest.from_inputs({"input_ids": np.array([1, 2]), "request_output_len": np.array([4]), **values})


def _on(neutral):
    """A value that asks for the feature."""
    dtype = neutral.spec.numpy_dtype
    if neutral.off is None:
        return np.array([b"x"], dtype=object) if neutral.spec.dtype == "STRING" else np.ones(2, dtype=dtype)
    return np.array([not neutral.off if isinstance(neutral.off, bool) else 2], dtype=dtype)


@pytest.mark.parametrize("neutral", NEUTRAL_ENSEMBLE, ids=lambda n: n.spec.name)
def test_ensemble_features_we_lack_are_refused_by_name_and_accepted_when_off(neutral):
    with pytest.raises(InvalidRequest) as refused:
        chat(**{neutral.spec.name: _on(neutral)})
    assert refused.value.field == neutral.spec.name and neutral.why in str(refused.value)
    if neutral.off is not None:
        chat(**{neutral.spec.name: np.array([neutral.off], dtype=neutral.spec.numpy_dtype)})
    elif neutral.spec.dtype == "STRING":
        chat(**{neutral.spec.name: np.array([b""], dtype=object)})  # an empty string asks for nothing


@pytest.mark.parametrize("neutral", NEUTRAL_TENSORRT_LLM, ids=lambda n: n.spec.name)
def test_tensorrt_llm_features_we_lack_are_refused_by_name(neutral):
    with pytest.raises(InvalidRequest) as refused:
        llm(**{neutral.spec.name: _on(neutral)})
    assert refused.value.field == neutral.spec.name


def test_old_names_are_aliases_and_a_conflict_names_the_old_one():
    assert chat(random_seed=np.array([5], dtype=np.uint64)).seed == 5
    assert chat(min_length=np.array([3], dtype=np.int32)).min_tokens == 3
    assert chat(min_length=np.array([3]), min_tokens=np.array([3])).min_tokens == 3
    with pytest.raises(InvalidRequest) as refused:
        chat(random_seed=np.array([5], dtype=np.uint64), seed=np.array([6], dtype=np.uint64))
    assert refused.value.field == "random_seed"
    assert llm(min_length=np.array([3])).sampling["min_tokens"] == 3
    with pytest.raises(InvalidRequest):
        llm(min_length=np.array([3]), min_tokens=np.array([4]))


def test_embedding_bias_words_and_weights_must_pair():
    with pytest.raises(InvalidRequest) as refused:
        chat(embedding_bias_words=np.array([b"a", b"b"], dtype=object), embedding_bias_weights=np.array([1.0]))
    assert refused.value.field == "embedding_bias_weights"


def test_embedding_bias_adds_each_weight_to_every_id_of_its_word(tiny_engine):
    folder = load_engine_folder(tiny_engine)
    tokenizer = QwenTokenizer.load(folder.path)
    pre = Preprocessor(folder, tokenizer)
    bias = pre.embedding_bias((("hello world", 2.0), (" world", -0.5)))
    assert bias.shape == (folder.config.model.vocab_size,) and bias.dtype == np.float32
    expected = np.zeros_like(bias)
    for word, weight in (("hello world", 2.0), (" world", -0.5)):
        for token in tokenizer.encode(word):
            expected[token] += weight
    assert np.array_equal(bias, expected) and np.count_nonzero(bias) >= 2


def _seq(**params):
    return Sequence([1, 2, 3], SamplingParams(max_tokens=4, **params))


def test_logprob_is_the_log_softmax_after_temperature_and_bias_before_top_k():
    torch.manual_seed(0)
    logits = torch.randn(1, 64)
    sampler = Sampler(vocab_size_limit=64)
    seq = _seq(temperature=0.7, top_k=5, seed=3, logprobs=True, logit_bias=((9, 1.5),))
    (token,) = sampler.sample(logits.clone(), [seq])
    row = logits[0].clone()
    row[9] += 1.5
    expected = torch.log_softmax(row / 0.7, dim=-1)[token]
    assert sampler.logprobs[seq.seq_id] == pytest.approx(float(expected), abs=1e-5)


def test_greedy_logprob_and_a_bias_that_changes_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0]])
    sampler = Sampler(vocab_size_limit=4)
    seq = _seq(logprobs=True, logit_bias=((2, 5.0),))
    assert sampler.sample(logits.clone(), [seq]) == [2]
    assert sampler.logprobs[seq.seq_id] == pytest.approx(float(torch.log_softmax(torch.tensor([0.0, 3, 6, -1]), 0)[2]))
    plain = _seq()
    assert sampler.sample(logits.clone(), [plain]) == [1] and plain.seq_id not in sampler.logprobs


def test_released_ids_get_their_logprobs_in_order_and_the_cumulative_counts_every_sampled_token():
    lp = TokenLogProbs()
    for value in (-0.1, -0.2, -0.3):
        lp.sampled(value)
        lp.pushed(value)
    lp.sampled(-0.4)  # a stop token: scored, never released
    assert lp.released(2) == [-0.1, -0.2] and lp.released(5) == [-0.3]
    assert lp.cumulative == pytest.approx(-1.0)
