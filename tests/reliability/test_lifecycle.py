"""The launcher (make serve) under trouble: SIGTERM under load answers every request and exits cleanly with
nothing left behind; a killed model stub fails what was in flight at once, shows not ready, and the server
serves again. With an OpenAI port, the OpenAI server starts once Triton is ready, a stream in flight at SIGTERM
gets its last event, both stop, and it is restarted alone or with Triton."""
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from client.reliability import Launched, kill_stub, sigterm_under_load
from qwen_triton.serving.launcher import Ports, free_ports

pytestmark = pytest.mark.e2e


def test_sigterm_under_load_answers_every_request_and_exits_cleanly(launched):
    result = sigterm_under_load(launched, streams=16)
    assert result["exit_code"] == 0 and result["exit_s"] < 15, result
    assert result["crash_lines"] == [] and result["left_behind"] == [], result
    # Every running request ended before the exit timeout (without the drain, Triton waits it out with the
    # ensemble's requests still in flight). Now and then Triton 2.51 then keeps the ensemble loaded until the
    # exit timeout while these clients go on sending (docs/reliability.md): slower, still clean.
    assert result["in_flight_cleared"], result
    # The requests running at the signal end cancelled (answered, not cut off); the clients' later ones are
    # refused at once (shutting down, model unloading, connection closed); none waits out its timeout.
    assert result["outcomes"].get("cancelled", 0) >= 1, result
    assert not any("no response from" in outcome for outcome in result["outcomes"]), result


@pytest.mark.parametrize("model", ["tensorrt_llm", "preprocessing"])
def test_a_killed_stub_fails_in_flight_requests_now_and_the_server_comes_back(launched, model):
    result = kill_stub(launched, model)
    assert result["in_flight"].startswith("error") and result["in_flight_ended_after_s"] < 5, result
    back_s = result["serving_again_after_s"]  # None: not back within kill_stub's wait (its log_tail says why)
    assert result["not_ready_seen"] and back_s is not None and back_s < 60, result
    assert result["next_request"].startswith("ok:"), result


@pytest.fixture
def with_openai(long_repo, tmp_path):
    port = free_ports(1)[0]
    server = Launched(long_repo, Ports.free(), tmp_path / "launcher.log", openai_port=port).start()
    server.openai_url = f"http://127.0.0.1:{port}/v1"
    yield server
    server.stop()


def _openai_pid(launched) -> int | None:
    found = [pid for pid in launched.processes()
             if b"qwen_triton.openai_server" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return found[0] if found else None


def _sdk_answer(url: str, timeout_s: float = 60) -> str:
    """The OpenAI server's first answer once it serves (it starts after Triton is ready)."""
    import openai

    deadline = time.monotonic() + timeout_s
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30) as sdk:
        while True:
            try:
                reply = sdk.chat.completions.create(model="ensemble", max_tokens=4,
                                                    messages=[{"role": "user", "content": "Hello"}])
                return reply.choices[0].finish_reason
            except (openai.APIConnectionError, openai.InternalServerError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def test_make_serve_starts_and_stops_the_openai_server_with_triton(with_openai):
    import openai

    assert _sdk_answer(with_openai.openai_url) in ("length", "stop")
    tree, outcome, streaming = with_openai.processes(), {}, threading.Event()
    assert _openai_pid(with_openai) in tree

    def long_stream():
        with openai.OpenAI(base_url=with_openai.openai_url, api_key="unused", max_retries=0, timeout=60) as sdk:
            try:
                stream = sdk.chat.completions.create(model="ensemble", stream=True, max_tokens=2000,
                                                     temperature=0.0, extra_body={"min_tokens": 2000},
                                                     messages=[{"role": "user", "content": "A long one."}])
                outcome["chunks"] = 0
                for _ in stream:
                    outcome["chunks"] += 1
                    streaming.set()
            except openai.APIError as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # cut off (the connection closed without the last event): recorded, not raised
                outcome["cut_off"] = repr(exc)
            finally:
                streaming.set()

    thread = threading.Thread(target=long_stream, daemon=True)
    thread.start()
    # SIGTERM once the stream has its first chunk (the engine gauges lag the first answer's end, so "busy" could
    # still count that one and signal before this stream began).
    assert streaming.wait(60) and "chunks" in outcome, outcome
    with_openai.process.send_signal(signal.SIGTERM)
    assert with_openai.process.wait(60) == 0
    thread.join(30)
    # The stream got its last event (the server's cancellation) before the OpenAI server exited: not cut off.
    assert not thread.is_alive() and "cancelled" in outcome.get("error", ""), outcome
    assert [pid for pid in tree if Path(f"/proc/{pid}").exists()] == []
    with pytest.raises(OSError):  # nothing listens on the OpenAI port any more
        socket.create_connection(("127.0.0.1", with_openai.openai_port), timeout=1)


def test_the_openai_server_is_restarted_alone_and_with_triton(with_openai):
    assert _sdk_answer(with_openai.openai_url)
    first = _openai_pid(with_openai)
    os.kill(first, signal.SIGKILL)  # the frontend alone dies: Triton keeps running
    assert _sdk_answer(with_openai.openai_url) and _openai_pid(with_openai) not in (None, first)
    second = _openai_pid(with_openai)
    result = kill_stub(with_openai, "tensorrt_llm")  # Triton restarts, and the OpenAI server with it
    assert result["next_request"].startswith("ok:"), result
    assert _sdk_answer(with_openai.openai_url) and _openai_pid(with_openai) not in (None, second)
