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
import secrets
from collections import OrderedDict
from typing import Callable

logger = logging.getLogger(__name__)
CANCEL_PROBE_MS = 200  # longest silence of a request in the ensemble before tensorrt_llm probes it
# The launcher puts a random key in tritonserver's environment (the models' stubs inherit it); a stop request
# naming it drains tensorrt_llm: every running request ends cancelled and new ones are refused (shutdown).
DRAIN_KEY_ENV = "QWEN_TRITON_DRAIN_KEY"


def drain_key_from_env() -> int | None:
    import os

    value = os.environ.get(DRAIN_KEY_ENV, "")
    return int(value) if value.isdigit() else None


def new_request_key() -> int:
    """Unique enough across the models' processes (63 random bits), never 0, fits UINT64 and int64."""
    return secrets.randbits(63) | 1


class CancelRelay:
    """postprocessing's side: the first cancelled step naming a request_key stops that request, once."""

    def __init__(self, send_stop: Callable[[int], None], remember: int = 4096):
        self._send_stop = send_stop
        self._remember = remember
        self._stopped: OrderedDict[int, None] = OrderedDict()  # keys already stopped, oldest first

    def __call__(self, key: int | None, is_cancelled: Callable[[], bool]) -> bool:
        """True when a stop was sent. is_cancelled is asked only for a step that names a key not yet stopped
        (it is a round trip to the server). Never raises: a failed step would make Triton's ensemble keep the
        request forever (docs/cancellation.md); a stop that failed is tried again at the next step."""
        if key is None or key in self._stopped or not is_cancelled():
            return False
        try:
            self._send_stop(key)
        except Exception:
            logger.exception("could not stop request_key %d", key)
            return False
        self._stopped[key] = None
        if len(self._stopped) > self._remember:
            self._stopped.popitem(last=False)
        return True
