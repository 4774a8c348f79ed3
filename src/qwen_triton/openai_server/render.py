"""Ensemble chunks -> OpenAI answers: the whole chat.completion / text_completion, and the server-sent-event
stream of chat.completion.chunk (or text_completion) objects: role in the first delta, finish_reason in the
last, the usage chunk when asked for, then `data: [DONE]`. It knows nothing of Triton's calls or of HTTP."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from pydantic import BaseModel

from ..client import Chunk
from .errors import OpenAIError, unavailable
from .schema import (AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion,
                     CompletionChoice, Delta, Usage)

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel) -> str:
    """One server-sent event: a `data:` line holding the JSON object, then a blank line."""
    return f"data: {payload.model_dump_json()}\n\n"


def usage(chunk: Chunk) -> Usage:
    return Usage(prompt_tokens=chunk.num_input_tokens, completion_tokens=chunk.num_output_tokens,
                 total_tokens=chunk.num_input_tokens + chunk.num_output_tokens)


def finish_reason(chunk: Chunk) -> str:
    """The ensemble's "stop" and "length" are OpenAI's; "cancelled" means the server ended the request (it is
    shutting down: a client's own disconnect is never answered), which OpenAI has no reason for."""
    if chunk.finish_reason == "cancelled":
        raise unavailable("the server cancelled this request (it is shutting down); retry")
    return chunk.finish_reason


@dataclass
class Renderer:
    """One request's answer. chat: chat.completion objects, else text_completion; prefix: text the answer starts
    with (a completion's echo)."""

    model: str
    chat: bool
    prefix: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def whole(self, text: str, last: Chunk) -> BaseModel:
        reason, text = finish_reason(last), self.prefix + text
        if self.chat:
            choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=reason)
            return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=[choice],
                                  usage=usage(last))
        return Completion(id=self.id, created=self.created, model=self.model, usage=usage(last),
                          choices=[CompletionChoice(text=text, finish_reason=reason)])

    def delta(self, text: str | None, reason: str | None = None, role: bool = False) -> BaseModel:
        if self.chat:
            choice = ChunkChoice(delta=Delta(role="assistant" if role else None, content=text), finish_reason=reason)
            return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice])
        return Completion(id=self.id, created=self.created, model=self.model,
                          choices=[CompletionChoice(text=text or "", finish_reason=reason)])

    def usage_chunk(self, last: Chunk) -> BaseModel:
        kind = ChatCompletionChunk if self.chat else Completion
        return kind(id=self.id, created=self.created, model=self.model, choices=[], usage=usage(last))


async def collect(first: Chunk, rest: AsyncIterator[Chunk]) -> tuple[str, Chunk]:
    """The whole text and the last chunk (which carries finish_reason and the final counts)."""
    parts, last = [first.text], first
    async for chunk in rest:
        parts.append(chunk.text)
        last = chunk
    return "".join(parts), last


async def event_stream(render: Renderer, first: Chunk, rest: AsyncIterator[Chunk], include_usage: bool,
                       on_error: Callable[[OpenAIError], None], on_done: Callable[[Chunk], None]) -> AsyncIterator[str]:
    """The SSE body. An error after the first event cannot change the HTTP status any more: it is sent as an
    event holding OpenAI's error object (the openai SDK raises it), then [DONE]."""
    if render.chat:
        yield sse(render.delta("", role=True))
    if render.prefix:
        yield sse(render.delta(render.prefix))
    try:
        last = first
        if first.text:
            yield sse(render.delta(first.text))
        async for chunk in rest:
            last = chunk
            if chunk.text:
                yield sse(render.delta(chunk.text))
        yield sse(render.delta(None if render.chat else "", reason=finish_reason(last)))
        if include_usage:
            yield sse(render.usage_chunk(last))
        on_done(last)
    except OpenAIError as error:
        on_error(error)
        yield f"data: {error.body().model_dump_json()}\n\n"
    yield DONE
