"""Reading Triton's metrics port: gauges by name, histograms between two snapshots."""
import pytest

from client.server_metrics import gauge, histogram, histogram_delta_ms

NAME = "qwen_time_to_first_response_seconds"


def _text(counts, total, free_blocks=7):
    bounds = ["0.01", "0.02", "0.05", "+Inf"]
    lines = ["# HELP qwen_engine_free_kv_blocks free paged-KV-cache blocks",
             f"qwen_engine_free_kv_blocks {free_blocks}", 'nv_inference_count{model="ensemble",version="1"} 9']
    lines += [f'{NAME}_bucket{{le="{b}"}} {n}' for b, n in zip(bounds, counts)]
    return "\n".join(lines + [f"{NAME}_sum {total}", f"{NAME}_count {counts[-1]}"]) + "\n"


def test_gauge_by_exact_name():
    assert gauge(_text([0, 0, 0, 0], 0), "qwen_engine_free_kv_blocks") == 7
    with pytest.raises(KeyError, match="qwen_engine_running"):
        gauge(_text([0, 0, 0, 0], 0), "qwen_engine_running")


def test_histogram_delta_counts_only_the_new_observations():
    before = histogram(_text([4, 4, 4, 4], 0.02), NAME)
    # 10 new: 1 under 10 ms, 6 in (10, 20], 2 in (20, 50], 1 beyond 50 ms; 0.25 s in all
    after = histogram(_text([5, 11, 13, 14], 0.27), NAME)
    assert histogram_delta_ms(before, after) == {"count": 10, "mean_ms": 25.0, "p50_ms_at_most": 20.0,
                                                 "p90_ms_at_most": 50.0}
    beyond = histogram(_text([4, 4, 4, 6], 0.32), NAME)
    assert histogram_delta_ms(before, beyond)["p50_ms_at_most"] is None
    assert histogram_delta_ms(before, before) == {"count": 0}
