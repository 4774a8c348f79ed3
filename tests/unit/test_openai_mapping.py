"""OpenAI requests -> ensemble inputs (no server): messages to system_prompt + history + text_input, refusals that
name the field, and the ensemble's own errors mapped back to the OpenAI field that fed them."""
import pytest

from qwen_triton.client import build_request
from qwen_triton.openai_server.errors import OpenAIError, from_triton
from qwen_triton.openai_server.mapping import chat_options, completion_options, conversation, field_names
from qwen_triton.openai_server.schema import ChatCompletionRequest, ChatMessage, CompletionRequest
from qwen_triton.schema import ENSEMBLE


def _messages(*pairs) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=content) for role, content in pairs]


def _chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", **{"messages": [{"role": "user", "content": "hi"}], **fields})


def _refused(call, *args) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


def test_messages_become_system_prompt_history_and_text_input():
    chat = conversation(_messages(("system", "Be brief."), ("developer", "Answer in French."), ("user", "u1"),
                                  ("assistant", "a1"), ("user", "u2"), ("assistant", "a2"), ("user", "u3")))
    assert chat.system_prompt == "Be brief.\nAnswer in French."
    assert chat.history == [["u1", "a1"], ["u2", "a2"]]
    assert chat.text_input == "u3"


def test_without_a_system_message_the_ensemble_default_applies():
    chat = conversation(_messages(("user", "only")))
    assert (chat.system_prompt, chat.history, chat.text_input) == (None, [], "only")


def test_text_parts_are_joined():
    message = ChatMessage.model_validate({"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                                                      {"type": "text", "text": "world"}]})
    assert conversation([message]).text_input == "Hello, world"


@pytest.mark.parametrize("roles", [
    ("user", "assistant"),  # does not end with the user
    ("user", "user"),  # not alternating
    ("assistant", "user"),  # starts with the assistant
    ("user", "assistant", "system", "user"),  # a system message after the turns
    ("system",),  # nothing to answer
    ("user", "tool", "user"),  # a role the ensemble has no template for
])
def test_malformed_conversations_are_refused_naming_messages(roles):
    error = _refused(conversation, _messages(*[(role, f"{role} says") for role in roles]))
    assert error.detail.param == "messages" and error.detail.type == "invalid_request_error"


def test_chat_options_are_ensemble_inputs_with_the_requested_values():
    request = _chat(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                              {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
                    max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop="END", presence_penalty=0.1,
                    frequency_penalty=0.2, top_k=5, min_tokens=2, repetition_penalty=1.1, stream=True)
    options = chat_options(request)
    assert set(k for k, v in options.items() if v is not None) <= {s.name for s in ENSEMBLE.inputs}
    assert options["text_input"] == "q2" and options["system_prompt"] == "S" and options["history"] == [["q1", "a1"]]
    assert options["stop_words"] == ["END"] and options["apply_chat_template"] is True
    assert (options["max_tokens"], options["seed"], options["top_k"], options["min_tokens"]) == (7, 3, 5, 2)
    values = build_request(options.pop("text_input"), **options)  # the client's schema check accepts them all
    assert values["history"][0, 0] == b'[["q1", "a1"]]'


def test_max_completion_tokens_wins_and_is_the_field_errors_name():
    request = _chat(max_tokens=5, max_completion_tokens=9)
    assert chat_options(request)["max_tokens"] == 9
    assert field_names(request)["max_tokens"] == "max_completion_tokens"
    assert field_names(_chat(max_tokens=5))["max_tokens"] == "max_tokens"


@pytest.mark.parametrize("fields, param", [
    (dict(n=2), "n"),
    (dict(logprobs=True), "logprobs"),
    (dict(top_logprobs=2), "top_logprobs"),
    (dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (dict(logit_bias={"50256": -100}), "logit_bias"),
    (dict(response_format={"type": "json_object"}), "response_format"),
    (dict(stream_options={"include_usage": True}), "stream_options"),  # without stream
])
def test_unsupported_chat_fields_are_refused_by_name(fields, param):
    assert _refused(chat_options, _chat(**fields)).detail.param == param


def test_accepted_fields_without_effect_do_not_refuse():
    options = chat_options(_chat(n=1, user="u", metadata={"k": "v"}, store=False, logprobs=False, top_logprobs=0,
                                 response_format={"type": "text"}, parallel_tool_calls=True))
    assert options["text_input"] == "hi"


def test_completion_options_send_the_raw_prompt_without_chat_template():
    options = completion_options(CompletionRequest(model="m", prompt=["Once upon"], max_tokens=4))
    assert options["text_input"] == "Once upon" and options["apply_chat_template"] is False
    assert "history" not in options and "system_prompt" not in options
    assert field_names(CompletionRequest(model="m", prompt="x"))["text_input"] == "prompt"


@pytest.mark.parametrize("fields, param", [
    (dict(prompt=["a", "b"]), "prompt"), (dict(logprobs=1), "logprobs"), (dict(best_of=2), "best_of"),
    (dict(suffix="end"), "suffix"),
])
def test_unsupported_completion_fields_are_refused_by_name(fields, param):
    request = CompletionRequest(model="m", **{"prompt": "p", **fields})
    assert _refused(completion_options, request).detail.param == param


@pytest.mark.parametrize("message, status, param", [
    ("in ensemble 'ensemble', max_tokens: must be > 0, got 0", 400, "max_completion_tokens"),
    ("in ensemble 'ensemble', stop_words: 300 words; this engine accepts at most 256", 400, "stop"),
    ("in ensemble 'ensemble', text_input: prompt of 5000 tokens exceeds max_input_len 1024", 400, "messages"),
    ("in ensemble 'ensemble', history: is not valid JSON", 400, "messages"),
    ("in ensemble 'ensemble', input_ids: prompt is 3000 tokens; this engine accepts at most 256", 400, "messages"),
    ("in ensemble 'ensemble', stream: streaming needs the decoupled repository", 400, "stream"),
    ("in ensemble 'ensemble', the server is shutting down", 503, None),
    ("Request for unknown model: 'ensemble' is not found", 503, None),
    ("in ensemble 'ensemble', RuntimeError: boom", 500, None),
])
def test_triton_errors_name_the_openai_field(message, status, param):
    error = from_triton(message, field_names(_chat(max_completion_tokens=3)))
    assert (error.status, error.detail.param) == (status, param)
    if status == 400:
        assert error.detail.message.startswith(f"{param}: ") and message.split(": ", 1)[1] in error.detail.message
