"""Cancellation through the ensemble (docs/cancellation.md), the parts that are neither Triton I/O nor engine.

Triton 2.51 cancels only the ensemble steps it schedules after the client cancelled; the running tensorrt_llm
step is never told. So the ensemble opts in (preprocessing's cancel_probe_ms) and tensorrt_llm tags every
response with a request_key, sending a response of only that key whenever the request has been silent for
cancel_probe_ms. Each of those responses schedules a postprocessing step; once one arrives cancelled,
postprocessing asks tensorrt_llm (stop=true, request_key) to end the request, which frees its slot and KV
blocks at the engine's next step and answers "cancelled".
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from collections import OrderedDict
from typing import Callable

logger = logging.getLogger(__name__)
CANCEL_PROBE_MS = 200  # longest silence of a request in the ensemble before tensorrt_llm probes it
# The launcher puts a random key in tritonserver's environment (the models' stubs inherit it); a stop request
# naming it drains tensorrt_llm: every running request ends cancelled and new ones are refused (shutdown).
DRAIN_KEY_ENV = "QWEN_TRITON_DRAIN_KEY"


def drain_key_from_env() -> int | None:
    value = os.environ.get(DRAIN_KEY_ENV, "")
    return int(value) if value.isdigit() else None


def stop_values(request_key: int) -> dict[str, object]:
    """tensorrt_llm's inputs for a stop: its config requires input_ids and input_lengths, so placeholders go
    along."""
    return {"input_ids": 0, "input_lengths": 1, "stop": True, "request_key": request_key}


def new_request_key() -> int:
    """Unique enough across the models' processes (63 random bits), never 0, fits UINT64 and int64."""
    return secrets.randbits(63) | 1


class CancelRelay:
    """postprocessing's side: a cancelled step naming a request_key stops that request, once. Whether a step is
    cancelled is a round trip to the server, so it is asked at most every `check_s` per key (a streamed
    request sends a step per token) and always for a probe."""

    def __init__(self, send_stop: Callable[[int], None], check_s: float = CANCEL_PROBE_MS / 2000,
                 remember: int = 4096, clock: Callable[[], float] = time.monotonic):
        self._send_stop = send_stop
        self._check_s, self._remember, self._clock = check_s, remember, clock
        self._checked: OrderedDict[int, float] = OrderedDict()  # key -> when last asked (inf: stopped)

    def __call__(self, key: int | None, is_cancelled: Callable[[], bool], probe: bool = False,
                 final: bool = False) -> bool:
        """True when a stop was sent. Never raises: a failed step would make Triton's ensemble keep the request
        forever (docs/cancellation.md); a stop that failed is tried again at a later step. final: the step of
        the request's last chunk: the request has ended in tensorrt_llm, nothing is left to stop, so the round
        trip is not made (a request answered in one response, a 1-token one, makes none) and the key is
        forgotten."""
        if key is None:
            return False
        if final:
            self._checked.pop(key, None)
            return False
        now, last = self._clock(), self._checked.get(key, float("-inf"))
        if last == float("inf") or (not probe and now - last < self._check_s):
            return False
        self._remember_check(key, now)
        if not is_cancelled():
            return False
        try:
            self._send_stop(key)
        except Exception:
            logger.exception("could not stop request_key %d", key)
            return False
        self._checked[key] = float("inf")
        return True

    def _remember_check(self, key: int, now: float) -> None:
        self._checked[key] = now
        self._checked.move_to_end(key)
        if len(self._checked) > self._remember:
            self._checked.popitem(last=False)
