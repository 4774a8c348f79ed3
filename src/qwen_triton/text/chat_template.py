"""Qwen-7B-Chat's ChatML prompt (`make_context` semantics) and chat-history parsing.

Knows ChatML and the history window; the engine's max_input_len is checked by the caller.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import InvalidRequest
from ..vocab import IM_END_ID, IM_START_ID
from .tokenizer import QwenTokenizer

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class ChatHistory:
    turns: tuple[tuple[str, str], ...]  # (user, assistant), oldest first
    system: str | None = None  # a leading {"role": "system"} message, if any


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest("history", message)


def _from_messages(items: list) -> ChatHistory:
    system = None
    if items and items[0].get("role") == "system":
        system, items = items[0].get("content"), items[1:]
        if not isinstance(system, str):
            raise _bad("system content must be a string")
    turns = []
    for i in range(0, len(items), 2):
        pair = items[i:i + 2]
        roles = [m.get("role") for m in pair]
        if roles != ["user", "assistant"]:
            raise _bad(f"messages must alternate user/assistant; got roles {roles} at position {i}")
        contents = [m.get("content") for m in pair]
        if not all(isinstance(c, str) for c in contents):
            raise _bad(f"message content at position {i} must be a string")
        turns.append((contents[0], contents[1]))
    return ChatHistory(tuple(turns), system)


def parse_history(raw: str) -> ChatHistory:
    """JSON: [[user, assistant], ...] (Qwen-7B-Chat chat()) or [{"role", "content"}, ...] messages."""
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(items, list):
        raise _bad("must be a JSON list")
    if all(isinstance(i, dict) for i in items):
        return _from_messages(items)
    turns = []
    for i, pair in enumerate(items):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise _bad(f"item {i} must be a [user, assistant] pair of strings or a role/content message")
        turns.append((pair[0], pair[1]))
    return ChatHistory(tuple(turns))


def build_prompt(tokenizer: QwenTokenizer, query: str, history, system: str, max_window_size: int) -> list[int]:
    if not query.strip():
        raise InvalidRequest("text_input", "is empty")
    newline = tokenizer.encode("\n")

    def turn(role: str, content: str) -> list[int]:
        return [IM_START_ID] + tokenizer.encode(role) + newline + tokenizer.encode(content) + [IM_END_ID]

    system_tokens = turn("system", system)
    context: list[int] = []
    # Newest to oldest; the oldest turns are dropped once the window would be exceeded.
    for user, assistant in reversed(list(history)):
        older = newline + turn("user", user) + newline + turn("assistant", assistant)
        if len(system_tokens) + len(older) + len(context) >= max_window_size:
            break
        context = older + context
    query_tokens = newline + turn("user", query) + newline + [IM_START_ID] + tokenizer.encode("assistant") + newline
    return system_tokens + context + query_tokens
