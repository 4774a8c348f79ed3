"""Qwen-7B-Chat's ChatML prompt (qwen_generation_utils.make_context) and chat-history parsing; it knows the
history window, and must not check the engine's max_input_len (the caller does, after templating)."""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidRequest
from ..vocab import IM_END_ID, IM_START_ID
from .tokenizer import QwenTokenizer

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatHistory:
    turns: tuple[tuple[str, str], ...] = ()  # (user, assistant), oldest first
    system: str | None = None  # a leading {"role": "system"} message, if the history had one


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest("history", message)


def _message(item: object, position: int) -> tuple[str, str]:
    if not isinstance(item, dict) or "role" not in item or "content" not in item:
        raise _bad(f"message {position} must be an object with 'role' and 'content'")
    role, content = item["role"], item["content"]
    if role not in ROLES:
        raise _bad(f"message {position} has unknown role {role!r}; expected one of {list(ROLES)}")
    if not isinstance(content, str):
        raise _bad(f"message {position} content must be a string, got {type(content).__name__}")
    return role, content


def _from_messages(items: list) -> ChatHistory:
    messages = [_message(item, i) for i, item in enumerate(items)]
    system = None
    if messages and messages[0][0] == "system":
        system = messages.pop(0)[1]
    offset = 0 if system is None else 1  # positions in errors count the client's own list
    turns = []
    for i in range(0, len(messages), 2):
        pair = messages[i:i + 2]
        if pair[0][0] != "user":
            raise _bad(f"message {i + offset} is {pair[0][0]!r}; turns must alternate user, assistant "
                       "(a system message may only come first)")
        if len(pair) < 2:
            raise _bad(f"user message {i + offset} has no assistant answer; send the open question as text_input")
        if pair[1][0] != "assistant":
            raise _bad(f"message {i + offset + 1} is {pair[1][0]!r}; expected the assistant's answer")
        turns.append((pair[0][1], pair[1][1]))
    return ChatHistory(tuple(turns), system)


def _from_pairs(items: list) -> ChatHistory:
    turns = []
    for i, pair in enumerate(items):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise _bad(f"item {i} must be a [user, assistant] pair of strings")
        turns.append((pair[0], pair[1]))
    return ChatHistory(tuple(turns))


def parse_history(raw: str) -> ChatHistory:
    """[[user, assistant], ...] as Qwen-7B-Chat's chat() takes it, or [{"role", "content"}, ...] messages."""
    try:
        items = json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise _bad(f"is not valid JSON ({exc})") from None
    except RecursionError:  # json.loads of thousands of nested lists
        raise _bad("is nested too deeply") from None
    if not isinstance(items, list):
        raise _bad(f"must be a JSON list, got {type(items).__name__}")
    if items and isinstance(items[0], dict):
        return _from_messages(items)
    return _from_pairs(items)


def build_prompt(tokenizer: QwenTokenizer, query: str, history: Sequence[tuple[str, str]], system: str,
                 max_window_size: int, max_prompt_len: int | None = None) -> list[int]:
    """make_context(chat_format="chatml"): system, the newest history turns that fit the window, the query.
    max_prompt_len (the engine's max_input_len): turns are also dropped, oldest first, until the whole prompt
    fits it, so a long chat is trimmed rather than refused."""
    if not query.strip():
        raise InvalidRequest("text_input", "must not be empty")
    newline = tokenizer.encode("\n")

    def encode(text: str) -> list[int]:
        # Qwen's tokenizer.encode NFC-normalises before BPE (QWenTokenizer.tokenize); so do we.
        return tokenizer.encode(unicodedata.normalize("NFC", text))

    def message(role: str, content: str) -> list[int]:
        # Role, newline and content are encoded apart, as make_context does: "\n" + content starting
        # with "\n" gives two newline tokens, not the single "\n\n" token the joined text would.
        return [IM_START_ID, *encode(role), *newline, *encode(content), IM_END_ID]

    system_tokens = message("system", system)
    tail = [*newline, *message("user", query), *newline, IM_START_ID, *encode("assistant"), *newline]
    room = None if max_prompt_len is None else max_prompt_len - len(system_tokens) - len(tail)
    kept: list[list[int]] = []  # newest first
    kept_len = 0
    for user, assistant in reversed(history):
        turn = [*newline, *message("user", user), *newline, *message("assistant", assistant)]
        # Strict '<' over system + history only (the query is not counted), and the first turn that
        # does not fit ends the walk: older, shorter turns are not picked up behind it.
        if len(system_tokens) + len(turn) + kept_len >= max_window_size:
            break
        if room is not None and kept_len + len(turn) > room:
            break
        kept.append(turn)
        kept_len += len(turn)
    prompt = list(system_tokens)
    for turn in reversed(kept):
        prompt += turn
    prompt += tail
    return prompt
