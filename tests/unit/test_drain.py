"""The launcher's drain (a stop naming the drain key) is acknowledged only once every running request has sent
its final response: Triton 2.51's shutdown refuses new ensemble steps, and a postprocessing step refused
while tensorrt_llm still answers its request keeps that ensemble request (and the exit) waiting forever."""
import threading
import time

import pytest

from qwen_triton.config import load_engine_folder
from qwen_triton.errors import Unavailable
from qwen_triton.runtime.engine import TokenEvent
from qwen_triton.engine_api import FinishReason
from qwen_triton.serving.llm_service import LLMService
from qwen_triton.serving.outbox import Outbox, Reply
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.text.tokenizer import QwenTokenizer

DRAIN_KEY = 12345


class Responder:
    def __init__(self, log, name):
        self.log, self.name, self.done = log, name, threading.Event()

    def send(self, outputs, final):
        self.log.append((self.name, final))
        if final:
            self.done.set()

    def fail(self, exc):
        self.log.append((self.name, exc))
        self.done.set()

    def is_cancelled(self):
        return False


class Engine:
    """Holds each request until the test ends it, as a busy engine does between steps."""

    def __init__(self):
        self.sinks, self.aborted = {}, []

    def submit(self, prompt_ids, params, sink):
        seq_id = len(self.sinks) + 1
        self.sinks[seq_id] = sink
        return seq_id

    def abort(self, seq_id):
        self.aborted.append(seq_id)

    def end(self, seq_id, tokens=()):
        self.sinks[seq_id](TokenEvent(seq_id, tuple(tokens), FinishReason.CANCELLED, 2, len(tokens)))


@pytest.fixture
def service(tiny_engine):
    folder = load_engine_folder(tiny_engine)
    service = LLMService(Engine(), QwenTokenizer.load(folder.path), folder.config, folder.generation,
                         drain_key=DRAIN_KEY)
    yield service
    service.outbox.close()


def _wait(event, seconds=0.3):
    return event.wait(seconds)


def test_the_drain_is_acknowledged_after_the_last_final_response(service):
    log = []
    running = [Responder(log, f"r{i}") for i in range(2)]
    for responder in running:
        service.submit(LLMRequest(input_ids=(1, 2), request_output_len=50, streaming=True), responder)
    ack = Responder(log, "ack")
    service.stop(DRAIN_KEY, ack)
    assert sorted(service.engine.aborted) == [1, 2]
    assert not _wait(ack.done)  # both requests still run: no acknowledgement yet
    service.engine.end(1, tokens=(9,))
    assert _wait(running[0].done, 5) and not _wait(ack.done)
    service.engine.end(2)
    assert _wait(ack.done, 5)
    assert log.index(("ack", True)) > max(log.index((r.name, True)) for r in running)
    with pytest.raises(Unavailable):
        service.submit(LLMRequest(input_ids=(1, 2), request_output_len=5), Responder(log, "late"))


def test_an_idle_service_acknowledges_the_drain_at_once(service):
    ack = Responder([], "ack")
    service.stop(DRAIN_KEY, ack)
    assert _wait(ack.done, 5)


def test_an_ordinary_stop_is_acknowledged_without_waiting_for_other_requests(service):
    log = []
    service.submit(LLMRequest(input_ids=(1, 2), request_output_len=50, streaming=True), Responder(log, "other"))
    ack = Responder(log, "ack")
    service.stop(777, ack)  # an unknown key: nothing to end
    assert _wait(ack.done, 5) and ("other", True) not in log


def test_outbox_sends_a_when_idle_reply_once_nothing_is_registered():
    box, sent = Outbox(), threading.Event()
    stream = _Stream()
    box.register(stream)
    box.when_idle(Reply(sent.set))
    time.sleep(0.2)
    assert not sent.is_set()
    box.unregister(stream)
    assert sent.wait(5)
    box.close()


class _Stream:
    def flush(self):
        pass

    def poll(self):
        pass
