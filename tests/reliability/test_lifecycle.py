"""The launcher (make serve) under trouble: SIGTERM under load answers every request and exits cleanly with
nothing left behind; a killed model stub fails what was in flight at once, shows not ready, and the server
serves again."""
import pytest

from client.reliability import kill_stub, sigterm_under_load

pytestmark = pytest.mark.e2e


def test_sigterm_under_load_answers_every_request_and_exits_cleanly(launched):
    result = sigterm_under_load(launched, streams=16)
    assert result["exit_code"] == 0 and result["exit_s"] < 15, result
    assert result["crash_lines"] == [] and result["left_behind"] == [], result
    # The requests running at the signal end cancelled (answered, not cut off); the clients' later ones are
    # refused at once (shutting down, model unloading, connection closed); none waits out its timeout.
    assert result["outcomes"].get("cancelled", 0) >= 1, result
    assert not any("no response from" in outcome for outcome in result["outcomes"]), result


@pytest.mark.parametrize("model", ["tensorrt_llm", "preprocessing"])
def test_a_killed_stub_fails_in_flight_requests_now_and_the_server_comes_back(launched, model):
    result = kill_stub(launched, model)
    assert result["in_flight"].startswith("error") and result["in_flight_ended_after_s"] < 5, result
    assert result["not_ready_seen"] and result["serving_again_after_s"] < 60, result
    assert result["next_request"].startswith("ok:"), result
