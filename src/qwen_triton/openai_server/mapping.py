"""OpenAI requests -> the ensemble's inputs (qwen_triton.client.build_request's keyword names), and back: which
OpenAI field fed each ensemble input, so that an INVALID_ARG from the ensemble names the client's field.

Chat messages become system_prompt + history + text_input, so the ensemble's ChatML template and history window
apply unchanged: leading system (or developer) messages are the system prompt, then user/assistant pairs are the
history, and the last message, a user's, is text_input. It knows nothing of HTTP or gRPC."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import OpenAIError, bad_request
from .schema import ChatCompletionRequest, ChatMessage, CompletionRequest, _Sampling

SYSTEM_ROLES = ("system", "developer")  # OpenAI's newer models call the system message "developer"
# Fields refused when set, and why: the engine has no way to honour them.
UNSUPPORTED = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "logit_bias": "logit_bias is not supported (the ensemble biases words, not token ids: embedding_bias_words)",
    "suffix": "suffix (insertion) is not supported",
}
# The ensemble returns log-probabilities of the tokens a response releases, but neither the tokens nor their
# alternatives: OpenAI's logprobs (one entry per token, with its text and bytes) cannot be built honestly.
LOGPROBS_WHY = "log-probabilities per token are not available from this server (the ensemble does not return " \
               "the tokens they belong to)"


@dataclass(frozen=True)
class Conversation:
    text_input: str  # the last user message
    history: list[list[str]]  # [[user, assistant], ...], oldest first
    system_prompt: str | None  # None: the ensemble's default


def _content(message: ChatMessage, index: int) -> str:
    if message.content is None:
        raise bad_request(f"messages[{index}].content", "is required")
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def conversation(messages: list[ChatMessage]) -> Conversation:
    """Leading system messages (joined by newlines), then strictly alternating user/assistant, ending with user."""
    system = [_content(m, i) for i, m in enumerate(messages) if m.role in SYSTEM_ROLES]
    start = len(system)
    if any(m.role in SYSTEM_ROLES for m in messages[start:]) or start == len(messages):
        raise bad_request("messages", "system messages may only come first, and a user message must follow them")
    turns = messages[start:]
    for offset, message in enumerate(turns):
        expected = "user" if offset % 2 == 0 else "assistant"
        if message.role != expected:
            raise bad_request("messages", f"message {start + offset} has role {message.role!r}, expected "
                                          f"{expected!r}: after the system messages, user and assistant turns "
                                          "alternate, starting and ending with user")
    if len(turns) % 2 == 0:
        raise bad_request("messages", "the last message must be the user's")
    texts = [_content(m, start + i) for i, m in enumerate(turns)]
    history = [[texts[i], texts[i + 1]] for i in range(0, len(texts) - 1, 2)]
    return Conversation(texts[-1], history, "\n".join(system) if system else None)


def _refuse_unsupported(request: _Sampling) -> None:
    for field, why in UNSUPPORTED.items():
        if getattr(request, field, None):
            raise bad_request(field, why)
    if request.n not in (None, 1):
        raise bad_request("n", f"only n=1 is supported, got {request.n}")
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options", "only allowed when stream is true")


def _sampling(request: _Sampling) -> dict:
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return dict(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k, seed=request.seed,
                presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
                repetition_penalty=request.repetition_penalty, min_tokens=request.min_tokens,
                stop_words=stop or None, stream=request.stream)


def chat_options(request: ChatCompletionRequest) -> dict:
    """build_request keyword arguments (text_input included) for a chat request."""
    _refuse_unsupported(request)
    if request.logprobs:
        raise bad_request("logprobs", LOGPROBS_WHY)
    if request.top_logprobs:
        raise bad_request("top_logprobs", LOGPROBS_WHY if request.logprobs else "requires logprobs: true")
    fmt = (request.response_format or {}).get("type", "text")
    if fmt != "text":
        raise bad_request("response_format", f"only type 'text' is supported, got {fmt!r}")
    if request.modalities and request.modalities != ["text"]:
        raise bad_request("modalities", "only ['text'] is supported")
    chat = conversation(request.messages)
    return dict(text_input=chat.text_input, system_prompt=chat.system_prompt, history=chat.history or None,
                max_tokens=request.max_completion_tokens or request.max_tokens, apply_chat_template=True,
                **_sampling(request))


def completion_options(request: CompletionRequest) -> dict:
    """build_request keyword arguments for a raw-prompt completion (no chat template)."""
    _refuse_unsupported(request)
    if request.logprobs is not None:
        raise bad_request("logprobs", LOGPROBS_WHY)
    if request.best_of not in (None, 1):
        raise bad_request("best_of", f"only best_of=1 is supported, got {request.best_of}")
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise bad_request("prompt", f"one prompt per request is supported, got {len(prompt)}")
        prompt = prompt[0]
    return dict(text_input=prompt, max_tokens=request.max_tokens, apply_chat_template=False, **_sampling(request))


def field_names(request: _Sampling) -> dict[str, str]:
    """Ensemble input -> the OpenAI field that fed it, for errors the ensemble answers."""
    chat = isinstance(request, ChatCompletionRequest)
    names = {name: name for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty",
                                     "frequency_penalty", "repetition_penalty", "min_tokens", "stream")}
    max_tokens = "max_completion_tokens" if chat and request.max_completion_tokens else "max_tokens"
    source = "messages" if chat else "prompt"
    # input_ids: the engine's own refusal of a prompt (longer than max_input_len, or than its KV cache).
    return {**names, "max_tokens": max_tokens, "stop_words": "stop", "text_input": source, "history": source,
            "system_prompt": source, "input_ids": source}


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise OpenAIError(404, f"The model `{requested}` does not exist; this server serves `{served}` "
                               "(GET /v1/models)", param="model", code="model_not_found")
