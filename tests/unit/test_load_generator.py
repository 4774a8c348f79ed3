"""The load generator's arithmetic (pure; the e2e tier drives it against the server): output tokens counted
inside a window, and Triton's statistics as a mean per request between two snapshots, per model and phase."""
from benchmarks.load_generator import _Sample, per_request_ms


def test_tokens_by_counts_the_chunks_arrived_by_then():
    sample = _Sample(start_s=10.0, ttft_s=0.5, latency_s=3.0, output_tokens=9,
                     arrival_s=[10.5, 11.0, 12.0, 13.0], tokens_at=[1, 4, 6, 9])
    assert sample.tokens_by(10.4) == 0
    assert sample.tokens_by(10.5) == 1
    assert sample.tokens_by(11.9) == 4
    assert sample.tokens_by(12.5) - sample.tokens_by(10.7) == 5  # window (10.7, 12.5]: chunks at 11.0 and 12.0
    assert sample.tokens_by(99.0) == 9


def _snapshot(success_count, ns):
    return {"success": (success_count, ns), "queue": (success_count, ns // 10)}


def test_per_request_ms_divides_each_phase_by_the_new_requests_and_skips_idle_models():
    before = {"pre": _snapshot(2, 4_000_000), "idle": _snapshot(5, 1_000_000)}
    after = {"pre": _snapshot(6, 12_000_000), "idle": _snapshot(5, 1_000_000)}
    assert per_request_ms(before, after) == {"pre": {"success": 2.0, "queue": 0.2}}
