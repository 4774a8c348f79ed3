"""Cancelling through the ensemble reaches the engine: requests that could run for seconds free their slots
within the issue's bounds, streamed or not, and Triton releases them (nothing left in flight)."""
import pytest

from client.reliability import cancel_storm, in_flight_at_shutdown, killed_client

pytestmark = pytest.mark.e2e


def test_the_long_request_would_not_end_by_itself_before_the_deadlines(probe):
    from qwen_triton.client import QwenClient

    with QwenClient(probe.grpc) as client:  # what a cancel that never reached the engine would wait out
        chunks = client.stream("x", max_tokens=2000, min_tokens=2000, temperature=0.0)
        next(chunks)
        assert probe.wait_idle(2.0) is None
        chunks.close()
    assert probe.wait_idle(10) is not None


@pytest.mark.parametrize("n, stream, deadline_s", [(1, True, 1.0), (1, False, 1.0), (32, True, 2.0)])
def test_cancelled_requests_free_the_engine(probe, n, stream, deadline_s):
    result = cancel_storm(probe, n, tokens=2000, stream=stream)
    assert result["held_before_cancel"] == n
    assert result["idle_after_s"] is not None and result["idle_after_s"] < deadline_s, result
    engine = probe.engine()
    assert engine["running_requests"] == engine["waiting_requests"] == 0


def test_a_killed_client_frees_its_requests(probe):
    result = killed_client(probe, n=16, tokens=2000)
    assert result["held_before_kill"] == 16
    assert result["idle_after_s"] is not None and result["idle_after_s"] < 2.0, result


def test_cancelled_requests_leave_nothing_in_flight(long_repo, tmp_path):
    from client.reliability import Server
    from qwen_triton.serving.launcher import Ports, TritonServer

    server = TritonServer(long_repo, Ports.free(), log_file=tmp_path / "server.log", exit_timeout_s=5)
    with server:
        probe = Server(f"127.0.0.1:{server.ports.grpc}", server.ports.metrics)
        for _ in range(2):
            assert cancel_storm(probe, 32, tokens=2000)["idle_after_s"] is not None
        # The engine is idle before Triton releases the last cancelled requests (their final responses still
        # travel through the ensemble): Triton must count all 64 answered, and then hold none.
        assert probe.wait_answered(64, 10) is not None, probe.answered()
        server.process.send_signal(2)  # Triton's own shutdown, no drain: it reports what it still holds
        server.process.wait(60)
    log = server.log_file.read_text()
    assert "Found 0 model versions that have in-flight inferences" in log
    assert in_flight_at_shutdown(log) == 0 and "failed to stop server" not in log
