"""NVIDIA's nv_trt_llm_* families and our latency histograms on a real tritonserver's metrics port, after a
streamed request through the ensemble (torch runtime on CPU)."""
import re
import time

import pytest

from client.server_metrics import histogram, scrape
from qwen_triton.client import QwenClient
from qwen_triton.serving.responses import FIRST_RESPONSE_METRIC, INTER_TOKEN_METRIC

pytestmark = [pytest.mark.e2e, pytest.mark.decoupled_only]
_SAMPLE = re.compile(r'^(nv_trt_llm_\w+)\{([^}]*)\}\s+(\S+)$')
# What the torch runtime publishes (docs/metrics.md): family -> (category label, its values).
EXPECTED = {
    "nv_trt_llm_request_metrics": ("request_type", {"active", "max", "scheduled", "context", "waiting"}),
    "nv_trt_llm_kv_cache_block_metrics": ("kv_cache_block_type", {"max", "free", "used", "tokens_per", "fraction"}),
    "nv_trt_llm_inflight_batcher_metrics": ("inflight_batcher_specific_metric",
                                            {"total_context_tokens", "generation_requests", "paused_requests"}),
    "nv_trt_llm_general_metrics": ("general_type", {"iteration_counter", "timestamp"}),
}


def nv_samples(text):
    """{family: {frozenset of (label, value)}: value}."""
    out = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match[2]))
            out.setdefault(match[1], {})[labels] = float(match[3])
    return out


def test_nvidia_families_and_latency_histograms_after_a_streamed_request(triton):
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as client:
        chunks = list(client.stream("Count to ten.", max_tokens=8, min_tokens=8, temperature=0.0))
    assert len(chunks) >= 2
    deadline = time.monotonic() + 10
    while True:  # the stats thread publishes at most every 50 ms; inter-token latencies are observed off the
        # thread that sends responses, so the last ones may land after the client holds its answer
        text = scrape(triton.ports.metrics)
        samples = nv_samples(text)
        general = {dict(k)["general_type"]: v for k, v in samples.get("nv_trt_llm_general_metrics", {}).items()}
        if general.get("iteration_counter", 0) >= 8 and histogram(text, INTER_TOKEN_METRIC)["count"] >= 1:
            break
        assert time.monotonic() < deadline, f"no engine step or inter-token latency on the metrics port: {general}"
        time.sleep(0.1)
    assert set(samples) == set(EXPECTED)  # no runtime memory family: the torch runtime cannot tell it
    for family, (category, values) in EXPECTED.items():
        labels = [dict(k) for k in samples[family]]
        assert all(set(label) == {"model", "version", category} for label in labels), labels
        assert all((label["model"], label["version"]) == ("tensorrt_llm", "1") for label in labels)
        assert {label[category] for label in labels} == values
    assert abs(general["timestamp"] - time.time()) < 60
    assert histogram(text, FIRST_RESPONSE_METRIC)["count"] >= 1
    assert histogram(text, INTER_TOKEN_METRIC)["count"] >= 1
