"""The OpenAI app against a fake gateway (no Triton): answers and SSE framing, errors in OpenAI's shape naming the
field, and the disconnect machinery that cancels a request's Triton call."""
import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from qwen_triton.client import Chunk
from qwen_triton.openai_server.app import ClientGone, EventStream, Settings, create_app, unless_disconnected
from qwen_triton.openai_server.triton import TritonError, TritonUnreachable

CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}


class FakeGateway:
    """Answers every request with `script`: Chunks, or an exception raised at that point."""

    def __init__(self, url, model):
        self.script = [Chunk("Hel", "", 9, 1), Chunk("lo", "", 9, 2), Chunk("!", "stop", 9, 3)]
        self.requests, self.is_ready, self.limits = [], True, {"max_seq_len": 2048, "max_input_len": 1024}

    async def generate(self, options):
        self.requests.append(options)
        script = self.script if options.get("stream") else [_whole(self.script)]
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item

    async def ready(self):
        return self.is_ready

    async def engine_limits(self):
        return self.limits

    async def close(self):
        pass


def _whole(chunks):
    if any(isinstance(c, Exception) for c in chunks):
        return next(c for c in chunks if isinstance(c, Exception))
    return Chunk("".join(c.text for c in chunks), chunks[-1].finish_reason, chunks[-1].num_input_tokens,
                 chunks[-1].num_output_tokens)


@pytest.fixture
def served():
    with TestClient(create_app(Settings("triton:8001", served_model="qwen"), FakeGateway)) as client:
        yield client, client.app.state.gateway


def _events(reply) -> list:
    """The SSE body: every event is `data: <payload>` and a blank line."""
    assert reply.headers["content-type"].startswith("text/event-stream")
    blocks = reply.text.split("\n\n")
    assert blocks[-1] == "" and all(b.startswith("data: ") and "\n" not in b for b in blocks[:-1])
    return [b[len("data: "):] if b == "data: [DONE]" else json.loads(b[len("data: "):]) for b in blocks[:-1]]


def test_chat_answer_with_usage_from_the_ensemble_counts(served):
    client, gateway = served
    reply = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3, "temperature": 0})
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "qwen" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert gateway.requests[-1]["max_tokens"] == 3 and gateway.requests[-1]["stream"] is False


def test_chat_stream_framing_role_first_reason_last_usage_then_done(served):
    client, gateway = served
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                       "stream_options": {"include_usage": True}})
    events = _events(reply)
    assert events[-1] == "[DONE]" and gateway.requests[-1]["stream"] is True
    chunks, usage = events[:-2], events[-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in events[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


def test_no_usage_chunk_unless_asked(served):
    events = _events(served[0].post("/v1/chat/completions", json={**CHAT, "stream": True}))
    assert all(e["usage"] is None and e["choices"] for e in events[:-1])


def test_completion_echo_and_stream(served):
    client, gateway = served
    body = client.post("/v1/completions", json={"model": "qwen", "prompt": "Say", "echo": True}).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "SayHello!"
    assert gateway.requests[-1]["apply_chat_template"] is False
    events = _events(client.post("/v1/completions", json={"model": "qwen", "prompt": "Say", "stream": True}))
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "Hello!"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("fields, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"stop": 5}, "stop"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
    ({"model": None}, "model"),
])
def test_bad_requests_get_openai_shaped_400s_naming_the_field(served, fields, param):
    client, gateway = served
    reply = client.post("/v1/chat/completions", json={**CHAT, **fields})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and param in error["message"]
    assert gateway.requests == []  # refused before reaching Triton


def test_missing_field_and_broken_json(served):
    client, _ = served
    error = client.post("/v1/chat/completions", json={"messages": CHAT["messages"]}).json()["error"]
    assert error["param"] == "model" and "required" in error["message"]
    reply = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"


def test_unknown_model_and_route_are_404s(served):
    client, _ = served
    reply = client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/gpt-4").status_code == 404
    reply = client.get("/v1/embeddings")
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "invalid_request_error"


def test_triton_refusal_names_the_field_and_unreachable_triton_is_503(served):
    client, gateway = served
    gateway.script = [TritonError("in ensemble 'ensemble', stop_words: 300 words; at most 256")]
    reply = client.post("/v1/chat/completions", json={**CHAT, "stop": ["x"]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "stop"
    gateway.script = [TritonUnreachable("UNAVAILABLE: connection refused")]
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "service_unavailable"
    gateway.is_ready = False
    assert client.get("/health/ready").status_code == 503


def test_an_error_mid_stream_is_an_error_event_then_done(served):
    client, gateway = served
    gateway.script = [Chunk("Hel", "", 9, 1), TritonError("in ensemble 'ensemble', RuntimeError: boom")]
    events = _events(client.post("/v1/chat/completions", json={**CHAT, "stream": True}))
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "server_error"
    assert "boom" in events[-2]["error"]["message"]


def test_a_request_the_server_cancelled_is_not_reported_as_finished(served):
    client, gateway = served
    gateway.script = [Chunk("partial", "cancelled", 9, 1)]
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 503


def test_models_lists_the_served_model_with_its_context(served):
    client, _ = served
    (card,) = client.get("/v1/models").json()["data"]
    assert card["id"] == "qwen" and card["max_model_len"] == 2048 and card["max_input_len"] == 1024
    with TestClient(create_app(Settings("t:1", max_model_len=512), FakeGateway)) as other:
        (card,) = other.get("/v1/models").json()["data"]
        assert card["id"] == "ensemble" and card["max_model_len"] == 512


def test_metrics_count_requests_errors_and_tokens(served):
    client, _ = served
    client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    client.post("/v1/chat/completions", json={**CHAT, "n": 3})
    text = client.get("/metrics").text
    assert 'qwen_openai_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'qwen_openai_requests_total{route="/v1/chat/completions",status="400"} 1.0' in text
    assert 'qwen_openai_errors_total{route="/v1/chat/completions",type="invalid_request_error"} 1.0' in text
    assert 'qwen_openai_completion_tokens_total{route="/v1/chat/completions"} 3.0' in text
    assert 'qwen_openai_time_to_first_token_seconds_count{route="/v1/chat/completions"} 1.0' in text


class _Request:
    """What unless_disconnected reads of a Starlette request: receive(), which reports the disconnect."""

    def __init__(self, gone: asyncio.Event):
        self.gone = gone

    async def receive(self):
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_a_disconnect_cancels_the_work_in_progress():
    async def scenario():
        cleaned, gone = asyncio.Event(), asyncio.Event()

        async def never_answers():
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.set()  # where the gateway cancels its gRPC call

        asyncio.get_running_loop().call_later(0.05, gone.set)
        with pytest.raises(ClientGone):
            await asyncio.wait_for(unless_disconnected(_Request(gone), never_answers()), 5)
        return cleaned.is_set()

    assert asyncio.run(scenario())


def test_an_event_stream_closes_its_body_when_the_client_leaves_between_events():
    async def scenario():
        closed, gone, sent = asyncio.Event(), asyncio.Event(), []

        async def body():
            try:
                yield "data: first\n\n"
                await asyncio.sleep(3600)  # no event due: only the disconnect listener can end this
                yield "data: never\n\n"
            finally:
                closed.set()

        async def send(message):
            sent.append(message)

        asyncio.get_running_loop().call_later(0.05, gone.set)
        # ASGI 2.4: a server that reports disconnects only when a write fails (Starlette then stops listening).
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        closes = []

        async def on_close():
            closes.append(closed.is_set())  # after the body

        await asyncio.wait_for(EventStream(body(), on_close)(scope, _Request(gone).receive, send), 5)
        return closes, [m.get("body") for m in sent]

    closes, bodies = asyncio.run(scenario())
    assert closes == [True] and bodies == [None, b"data: first\n\n"]


def test_an_event_stream_runs_on_close_even_if_the_client_left_before_the_first_byte():
    async def scenario():
        closes = []

        async def body():
            yield "data: never sent\n\n"

        async def send(message):
            raise OSError("connection reset")  # uvicorn's send once the socket is gone

        async def on_close():
            closes.append(True)

        async def receive():
            await asyncio.sleep(3600)

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        await asyncio.wait_for(EventStream(body(), on_close)(scope, receive, send), 5)
        return closes

    assert asyncio.run(scenario()) == [True]
