"""ResponseStream + Outbox: responses leave on the outbox thread, merge when sending lags, stay ordered with
one final; client cancellation and send failures end the request at the engine's next event."""
import threading
import time

import numpy as np
import pytest

from qwen_triton.runtime.engine import TokenEvent
from qwen_triton.engine_api import FinishReason
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.serving.outbox import CANCEL_POLL_S, Outbox
from qwen_triton.serving.responses import ResponseStream
from qwen_triton.text.detokenizer import TextStream
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.vocab import IM_END_ID, STOP_TOKEN_IDS


class Responder:
    def __init__(self, send_delay_s=0.0, fail_sends=False):
        self.responses, self.failures, self.cancelled = [], [], False
        self.send_delay_s, self.fail_sends = send_delay_s, fail_sends
        self.done = threading.Event()

    def send(self, outputs, final):
        time.sleep(self.send_delay_s)
        if self.fail_sends:
            raise ConnectionError("client went away")
        self.responses.append((list(np.asarray(outputs["output_ids"]).reshape(-1)), outputs["finish_reason"][0], final))
        if final:
            self.done.set()

    def fail(self, exc):
        self.failures.append(exc)
        self.done.set()

    def is_cancelled(self):
        return self.cancelled


@pytest.fixture(scope="module")
def tokenizer():
    return QwenTokenizer.load()


@pytest.fixture
def outbox():
    box = Outbox()
    yield box
    box.close()


def make_stream(tokenizer, outbox, responder, streaming=True):
    request = LLMRequest(input_ids=(1, 2, 3), request_output_len=100, streaming=streaming)
    stream = ResponseStream(request, frozenset(STOP_TOKEN_IDS), TextStream(tokenizer), responder, outbox)
    outbox.register(stream)  # as LLMService.submit does before the engine may call it
    return stream


def feed(stream, tokens, final=True):
    results = [stream(TokenEvent(1, (t,), None, 3, i + 1)) for i, t in enumerate(tokens)]
    if final:
        results.append(stream(TokenEvent(1, (IM_END_ID,), FinishReason.STOP, 3, len(tokens) + 1)))
    return results


def test_slow_sending_merges_chunks_in_order_with_one_final(tokenizer, outbox):
    tokens = tokenizer.encode(" one two three four five six seven eight nine ten")
    responder = Responder(send_delay_s=0.05)
    stream = make_stream(tokenizer, outbox, responder)
    assert feed(stream, tokens[:1], final=False) == [True]
    time.sleep(0.02)  # the outbox is now sending the first chunk
    assert all(feed(stream, tokens[1:])[:-1])
    assert responder.done.wait(5)
    ids = [i for chunk, _, _ in responder.responses for i in chunk]
    assert ids == tokens  # nothing lost, nothing reordered, the stop token stripped
    assert 1 < len(responder.responses) < len(tokens)  # merged while the first send was in flight
    assert [final for _, _, final in responder.responses] == [False] * (len(responder.responses) - 1) + [True]
    assert responder.responses[-1][1] == b"stop"


def test_not_streaming_sends_one_response(tokenizer, outbox):
    tokens = tokenizer.encode("你好，世界")
    responder = Responder()
    feed(make_stream(tokenizer, outbox, responder, streaming=False), tokens)
    assert responder.done.wait(5)
    assert responder.responses == [(tokens, b"stop", True)]


def test_client_cancellation_ends_the_request_at_the_next_event(tokenizer, outbox):
    responder = Responder()
    stream = make_stream(tokenizer, outbox, responder, streaming=False)
    assert stream(TokenEvent(1, (100,), None, 3, 1)) is True
    responder.cancelled = True
    time.sleep(3 * CANCEL_POLL_S)
    assert stream(TokenEvent(1, (101,), None, 3, 2)) is False  # the engine frees the sequence now
    assert responder.done.wait(5) and responder.responses[-1][1:] == (b"cancelled", True)


def test_failed_send_ends_the_request(tokenizer, outbox):
    responder = Responder(fail_sends=True)
    stream = make_stream(tokenizer, outbox, responder)
    assert stream(TokenEvent(1, (100,), None, 3, 1)) is True
    deadline = time.monotonic() + 5
    while stream(TokenEvent(1, (101,), None, 3, 2)):
        assert time.monotonic() < deadline, "the engine was never told to stop"
        time.sleep(0.01)


def test_engine_error_is_sent_as_a_failure(tokenizer, outbox):
    responder = Responder()
    stream = make_stream(tokenizer, outbox, responder)
    assert stream(TokenEvent(1, (), FinishReason.ERROR, 3, 0, error="CUDA out of memory")) is False
    assert responder.done.wait(5)
    assert len(responder.failures) == 1 and "CUDA out of memory" in str(responder.failures[0])
    assert responder.responses == []


def test_close_sends_what_was_posted(tokenizer):
    box = Outbox()
    responder = Responder(send_delay_s=0.02)
    feed(make_stream(tokenizer, box, responder), tokenizer.encode(" a b c"))
    box.close()
    assert responder.done.is_set()


def test_time_to_first_response_is_reported_once_and_cannot_break_the_request(tokenizer):
    observed = []

    def on_first_response(seconds):
        observed.append(seconds)
        raise RuntimeError("metric IPC failed")

    box = Outbox(on_first_response)
    responder = Responder(send_delay_s=0.01)
    started = time.perf_counter()
    stream = make_stream(tokenizer, box, responder)
    time.sleep(0.03)  # the first response cannot leave sooner than this after submission
    feed(stream, tokenizer.encode(" one two three four"))
    assert responder.done.wait(5)
    box.close()
    assert len(observed) == 1 and 0.03 <= observed[0] <= time.perf_counter() - started
    assert responder.responses[-1][1:] == (b"stop", True)  # the failing callback ended nothing


class TextResponder(Responder):
    def send(self, outputs, final):
        super().send(outputs, final)
        self.responses[-1] += (outputs["text"][0].decode("utf-8"),)


@pytest.mark.parametrize("streaming", [True, False])
def test_each_response_carries_the_text_of_its_ids_decoded_once(tokenizer, outbox, streaming):
    """tensorrt_llm sends the detokenizer's text with the ids, so postprocessing does not decode them again."""
    tokens = tokenizer.encode("你好 🎉 world, 世界") + tokenizer.encode(" and more")
    responder = TextResponder()
    stream = make_stream(tokenizer, outbox, responder, streaming=streaming)
    feed(stream, tokens)
    assert responder.done.wait(5)
    assert all(text == tokenizer.decode(ids) for ids, _, _, text in responder.responses)
    assert "".join(text for *_, text in responder.responses) == tokenizer.decode(tokens)
