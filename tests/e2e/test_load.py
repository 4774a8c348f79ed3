"""The project's load tests run against the real server (they measure; here we only check they work)."""
import pytest

from benchmarks.load_generator import Job, run_steady_window, run_streaming_load, ttft_samples_ms, with_triton_stats
from benchmarks.perf_analyzer import run_perf_analyzer

pytestmark = [pytest.mark.e2e, pytest.mark.decoupled_only]


def test_short_perf_analyzer_run_against_the_ensemble(triton, tmp_path):
    result = run_perf_analyzer(f"127.0.0.1:{triton.ports.grpc}", tmp_path, concurrency=2, max_tokens=8,
                               measurement_ms=1500)
    assert result["requests_per_s"] > 0
    assert "--input-data" in result["command"] and "--streaming" in result["command"]


def test_streaming_load_counts_output_tokens_only(triton):
    result = run_streaming_load(f"127.0.0.1:{triton.ports.grpc}", concurrency=2, requests_per_worker=2, max_tokens=8)
    assert result.failed == 0 and result.requests == 4
    assert result.output_tokens == 4 * 8  # min_tokens = max_tokens: exactly 8 each
    assert result.ttft_ms_mean > 0 and result.itl_ms_mean > 0


def test_streaming_load_from_several_processes(triton):
    result = run_streaming_load(f"127.0.0.1:{triton.ports.grpc}", concurrency=3, requests_per_worker=2, max_tokens=6,
                                processes=2)
    assert result.failed == 0 and result.requests == 6 and result.output_tokens == 6 * 6
    assert result.duration_s > 0 and result.ttft_ms_p50 > 0


def test_steady_window_counts_only_tokens_inside_the_window(triton):
    jobs = [Job("hello", 8), Job("a longer prompt about the sea", 12)]
    result = run_steady_window(f"127.0.0.1:{triton.ports.grpc}", concurrency=2, jobs=jobs, warmup_s=0.5,
                               window_s=1.5, processes=2)
    assert result.failed == 0 and result.duration_s == 1.5
    assert result.requests > 0 and 0 < result.output_tokens
    assert result.ttft_ms_p50 > 0 and result.itl_ms_mean > 0


def test_ttft_samples_and_triton_statistics_over_them(triton):
    url = f"127.0.0.1:{triton.ports.grpc}"
    samples, stats = with_triton_stats(url, lambda: ttft_samples_ms(url, Job(" the" * 64, 1, True), repeats=3))
    assert len(samples) == 3 and all(0 < s < 10_000 for s in samples)
    assert set(stats) == {"ensemble", "preprocessing", "tensorrt_llm", "postprocessing"}
    # 4 requests (one not sampled); the ensemble holds each at least as long as its preprocessing
    assert 0 < stats["preprocessing"]["success"] <= stats["ensemble"]["success"]
