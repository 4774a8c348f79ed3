"""The SSE side of benchmarks.openai_load, against fake streams (no server): what a request sends, how a stream's
chunks become load_generator's _Sample (tokens spread by UTF-8 bytes, the total from usage), and which
streams count as failed."""
import asyncio
import json

import httpx
import pytest

from benchmarks.load_generator import Job
from benchmarks.openai_load import StreamError, StreamTally, byte_share, completion_body, run_streams


def _event(text=None, usage=None, finish=None) -> str:
    choices = [] if text is None else [{"index": 0, "text": text, "finish_reason": finish}]
    body = {"id": "cmpl-1", "object": "text_completion", "choices": choices}
    if usage is not None:
        body["usage"] = {"prompt_tokens": 3, "completion_tokens": usage, "total_tokens": 3 + usage}
    return f"data: {json.dumps(body)}"


def _feed(lines_at: list[tuple[str, float]], start_s: float = 10.0) -> StreamTally:
    tally = StreamTally(start_s)
    for line, now in lines_at:
        tally.feed(line, now)
    return tally


def test_byte_share_spreads_the_total_by_bytes_and_ends_at_it():
    assert byte_share(10, [1, 1, 2, 6]) == [1, 2, 4, 10]
    assert byte_share(3, [5, 5]) == [2, 3]  # round(1.5) == 2: non-decreasing, last is the total
    assert byte_share(7, [4]) == [7]


def test_a_stream_becomes_a_sample_with_exact_total_and_byte_shared_arrivals():
    # Chunk texts of 2, 0, 2 and 4 UTF-8 bytes ("é" is 2); the usage chunk says 8 tokens in all.
    tally = _feed([(_event("ab"), 10.5), ("", 10.5), (_event(""), 10.7), (_event("é"), 11.0),
                   (_event("cdef"), 12.0), (_event("", finish="length"), 12.1), (_event(usage=8), 12.2),
                   ("data: [DONE]", 12.3)])
    sample = tally.sample(end_s=12.4)
    assert sample.arrival_s == [10.5, 11.0, 12.0]  # the empty-text chunks are not arrivals
    assert sample.tokens_at == [2, 4, 8]
    assert sample.output_tokens == 8
    assert sample.ttft_s == pytest.approx(0.5)  # first non-empty text, not the first event
    assert sample.latency_s == pytest.approx(2.4)
    assert sample.tokens_by(11.5) - sample.tokens_by(10.6) == 2  # window (10.6, 11.5]: the "é" chunk


def test_a_stream_without_text_puts_its_tokens_at_the_usage_chunk():
    tally = _feed([(_event(""), 10.2), (_event(usage=5), 10.9), ("data: [DONE]", 11.0)])
    sample = tally.sample(end_s=11.0)
    assert (sample.arrival_s, sample.tokens_at, sample.ttft_s) == ([10.9], [5], pytest.approx(1.0))


def test_chat_deltas_count_as_text():
    tally = _feed([('data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}', 10.1),
                   ('data: {"choices": [{"delta": {"content": "hi"}}]}', 10.3), (_event(usage=2), 10.4),
                   ("data: [DONE]", 10.5)])
    assert tally.sample(10.5).arrival_s == [10.3]


@pytest.mark.parametrize("lines, message", [
    ([_event("ab"), _event(usage=2)], "without data: \\[DONE\\]"),
    ([_event("ab"), "data: [DONE]"], "no usage chunk"),
    ([_event("ab"), 'data: {"error": {"message": "engine failed", "type": "server_error"}}'], "engine failed"),
])
def test_an_incomplete_or_failed_stream_raises(lines, message):
    with pytest.raises(StreamError, match=message):
        _feed([(line, 10.0 + i) for i, line in enumerate(lines)]).sample(end_s=20.0)


def test_the_request_is_the_grpc_loads_as_openai_fields():
    body = completion_body(Job(" the" * 5, 7, True), "ensemble", {"temperature": 0.0})
    assert body == {"model": "ensemble", "prompt": " the the the the the", "max_tokens": 7, "min_tokens": 7,
                    "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    with pytest.raises(ValueError):
        completion_body(Job("hello", 7, raw_prompt=False), "ensemble", {})


def _fake_server(requests: list[dict]):
    """An OpenAI server's answers: /v1/models, and per completion 3 text chunks then usage; a prompt "bad" gets
    a 400."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served-name"}]})
        body = json.loads(request.content)
        requests.append(body)
        if body["prompt"] == "bad":
            return httpx.Response(400, json={"error": {"message": "max_tokens too large"}})
        events = [_event("x" * n) for n in (1, 2, 3)] + [_event(usage=body["max_tokens"]), "data: [DONE]"]
        return httpx.Response(200, content="".join(e + "\n\n" for e in events).encode(),
                              headers={"content-type": "text/event-stream"})
    return httpx.MockTransport(handle)


def test_run_streams_sends_every_job_once_and_counts_failures(monkeypatch):
    requests: list[dict] = []
    transport = _fake_server(requests)
    real_client = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real_client(transport=transport, **kw))
    jobs = [Job(" the" * 4, 6, True), Job("bad", 6, True), Job(" the", 12, True)]
    samples, failures = asyncio.run(run_streams("http://fake", 2, jobs, {"temperature": 0.0}))
    assert sorted(r["prompt"] for r in requests) == sorted(j.prompt for j in jobs)
    assert {r["model"] for r in requests} == {"served-name"}  # as /v1/models names it
    assert sorted(s.output_tokens for s in samples) == [6, 12]
    assert sorted(s.tokens_at[-1] for s in samples) == [6, 12]
    assert len(failures) == 1 and "HTTP 400" in failures[0]
