"""Every id and word list is checked where a request enters, naming the field; long chats are trimmed to what
the engine accepts; a deeply nested history is refused by name."""
import json

import pytest

from qwen_triton.config import load_engine_folder
from qwen_triton.errors import InvalidRequest
from qwen_triton.serving.llm_service import LLMService
from qwen_triton.serving.preprocess import Preprocessor
from qwen_triton.serving.chat_request import ChatRequest
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.text.word_lists import to_word_list

FAR = 10**9


@pytest.fixture(scope="module")
def folder(tiny_engine):
    return load_engine_folder(tiny_engine)


@pytest.fixture(scope="module")
def service(folder):
    service = LLMService(None, QwenTokenizer.load(folder.path), folder.config, folder.generation)
    yield service
    service.outbox.close()


@pytest.fixture(scope="module")
def preprocessor(folder):
    return Preprocessor(folder, QwenTokenizer.load(folder.path))


@pytest.mark.parametrize("field, request_fields", [
    ("input_ids", dict(input_ids=(1, FAR))),
    ("end_id", dict(end_id=FAR)),
    ("pad_id", dict(pad_id=-1)),
    ("bad_words", dict(bad_words_list=to_word_list([[5], [7, FAR]]))),
    ("stop_words_list", dict(stop_words_list=to_word_list([[FAR]]))),
])
def test_ids_outside_the_vocabulary_are_refused_by_field(service, field, request_fields):
    request = LLMRequest(**{"input_ids": (1, 2), "request_output_len": 4, **request_fields})
    with pytest.raises(InvalidRequest) as refused:
        service.sampling_params(request) and service.stop_strings(request)
    assert refused.value.field == field and str(FAR if field != "pad_id" else -1) in str(refused.value)


@pytest.mark.parametrize("field", ["bad_words", "stop_words_list"])
def test_word_lists_are_bounded_by_the_engine(service, folder, field):
    limits = folder.config.limits
    too_many = [[5]] * (limits.max_words_per_list + 1)
    too_long = [[5] * (limits.max_word_tokens + 1)]
    for words, what in ((too_many, "words"), (too_long, "tokens")):
        list_name = field if field.endswith("_list") else f"{field}_list"
        request = LLMRequest(input_ids=(1,), request_output_len=4, **{list_name: to_word_list(words)})
        with pytest.raises(InvalidRequest, match=what) as refused:
            service.sampling_params(request) and service.stop_strings(request)
        assert refused.value.field == field


def test_bad_words_text_is_bounded_by_preprocessing(preprocessor, folder):
    limits = folder.config.limits
    with pytest.raises(InvalidRequest) as refused:
        preprocessor(ChatRequest(text_input="hi", bad_words=("x",) * (limits.max_words_per_list + 1)))
    assert refused.value.field == "bad_words"
    assert preprocessor(ChatRequest(text_input="hi", bad_words=("x",) * limits.max_words_per_list))


def test_stop_strings_are_bounded_by_tensorrt_llm(service, folder):
    """The ensemble's stop strings arrive as text and are settled where direct callers' word lists are."""
    limits = folder.config.limits
    for words, what in ((("x",) * (limits.max_words_per_list + 1), "words"),
                        (("lorem " * (limits.max_word_tokens + 1),), "tokens")):
        with pytest.raises(InvalidRequest, match=what) as refused:
            service.stop_strings(LLMRequest(input_ids=(1,), stop_words=words))
        assert refused.value.field == "stop_words"
    fine = ("x",) * limits.max_words_per_list
    assert service.stop_strings(LLMRequest(input_ids=(1,), stop_words=fine)) == list(fine)


def test_defaults_are_settled_by_tensorrt_llm(service, folder):
    """Preprocessing sends no default: a request without an output length gets the checkpoint's."""
    params = service.sampling_params(LLMRequest(input_ids=(1,)))
    assert params.max_tokens == folder.generation.max_new_tokens
    assert service.sampling_params(LLMRequest(input_ids=(1,), request_output_len=3)).max_tokens == 3


def test_pad_id_reaches_the_runtime(service):
    assert service.sampling_params(LLMRequest(input_ids=(1,), pad_id=7)).pad_id == 7


def test_a_long_chat_is_trimmed_oldest_first_to_what_the_engine_accepts(preprocessor, folder):
    limit = folder.config.limits.max_input_len
    history = [[f"question {i} " * 8, f"answer {i} " * 8] for i in range(100)]
    request = ChatRequest(text_input="and now?", history=json.dumps(history))
    out = preprocessor(request)
    ids = out["input_ids"].tolist()
    assert limit - 60 < len(ids) <= limit  # filled close to the limit, not refused
    text = QwenTokenizer.load().decode(ids)
    assert "question 99" in text and "question 0 " not in text and text.rstrip().endswith("assistant")


def test_a_deeply_nested_history_is_refused_by_name(preprocessor):
    with pytest.raises(InvalidRequest) as refused:
        preprocessor(ChatRequest(text_input="hi", history="[" * 100_000 + "]" * 100_000))
    assert refused.value.field == "history"
