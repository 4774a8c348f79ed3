"""Edge parsing: wire values -> typed requests, every bad value named by its field."""
import numpy as np
import pytest

from qwen_triton.errors import InvalidRequest
from qwen_triton.runtime.sequence import SamplingParams
from qwen_triton.serving.chat_request import ChatRequest
from qwen_triton.serving.llm_request import LLMRequest


def _text(*items):
    return np.array(list(items), dtype=np.object_)


def test_chat_request_reads_optional_inputs():
    request = ChatRequest.from_inputs({
        "text_input": _text("你好".encode()), "bad_words": _text(b"a", b"", b"bc"),
        "apply_chat_template": np.array([False])})
    assert request.text_input == "你好"
    assert request.bad_words == ("a", "bc")  # empty strings dropped
    assert request.apply_chat_template is False and request.system_prompt is None


def test_llm_request_reads_what_the_ensemble_wires_straight_to_it():
    request = LLMRequest.from_inputs({
        "input_ids": np.array([[1, 2]], np.int32), "stop_words": _text(b"a", b"", b"bc"),
        "pad_id": np.array([7], np.int32)})
    assert request.stop_words == ("a", "bc") and request.pad_id == 7
    assert request.request_output_len is None  # settled by LLMService, from the checkpoint's defaults
    with pytest.raises(InvalidRequest) as info:
        LLMRequest.from_inputs({"input_ids": np.array([[1]], np.int32), "request_output_len": np.array([0], np.int32)})
    assert info.value.field == "max_tokens"


@pytest.mark.parametrize("values,field", [
    ({}, "text_input"),
    ({"text_input": _text(b"  ")}, "text_input"),
    ({"text_input": _text(b"\xff\xfe")}, "text_input"),
    ({"text_input": _text(b"hi"), "history": _text(b"\xc3")}, "history"),
])
def test_chat_request_errors_name_the_field(values, field):
    with pytest.raises(InvalidRequest) as info:
        ChatRequest.from_inputs(values)
    assert info.value.field == field and field in str(info.value)


def test_llm_request_maps_tensorrtllm_names_to_knobs():
    request = LLMRequest.from_inputs({
        "input_ids": np.array([1, 2, 3, 0], np.int32), "input_lengths": np.array([3], np.int32),
        "request_output_len": np.array([9], np.int32), "runtime_top_p": np.array([0.5], np.float32),
        "random_seed": np.array([7], np.uint64), "streaming": np.array([True])})
    assert request.input_ids == (1, 2, 3)  # input_lengths trims padding
    assert request.sampling == {"top_p": 0.5, "seed": 7}
    assert request.streaming


@pytest.mark.parametrize("knobs,field", [
    (dict(top_p=1.5), "top_p"), (dict(top_p=0.0), "top_p"), (dict(temperature=-0.1), "temperature"),
    (dict(top_k=-1), "top_k"), (dict(max_tokens=0), "max_tokens"), (dict(min_tokens=9, max_tokens=4), "min_tokens"),
])
def test_sampling_params_validate_at_construction(knobs, field):
    with pytest.raises(InvalidRequest) as info:
        SamplingParams(**knobs)
    assert info.value.field == field
