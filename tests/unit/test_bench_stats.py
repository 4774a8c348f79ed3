"""The load tests' Triton statistics arithmetic: the mean per request between two snapshots, per model and phase."""
from qwen_triton.loadtest import per_request_ms


def _snapshot(success_count, ns):
    return {"success": (success_count, ns), "queue": (success_count, ns // 10)}


def test_per_request_ms_divides_each_phase_by_the_new_requests_and_skips_idle_models():
    before = {"pre": _snapshot(2, 4_000_000), "idle": _snapshot(5, 1_000_000)}
    after = {"pre": _snapshot(6, 12_000_000), "idle": _snapshot(5, 1_000_000)}
    assert per_request_ms(before, after) == {"pre": {"success": 2.0, "queue": 0.2}}
