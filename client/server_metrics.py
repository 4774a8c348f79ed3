"""Triton's Prometheus metrics port, read by the benchmarks, the reliability probes and tests: gauges, and
histograms between two snapshots (count, mean, and the bucket bounds that hold the median and the 90th
percentile). Torch-free."""
from __future__ import annotations

import math
import re
import urllib.request

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$')


def scrape(port: int, host: str = "127.0.0.1") -> str:
    return urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()


def samples(text: str, name: str):
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match["name"] == name:
            yield match["labels"] or "", float(match["value"])


def gauge(text: str, name: str) -> float:
    values = [value for _, value in samples(text, name)]
    if not values:
        raise KeyError(f"metric {name} not on the metrics port")
    return values[0]


def histogram(text: str, name: str) -> dict:
    """{"count", "sum", "buckets": {upper bound: cumulative count}} of an unlabelled histogram."""
    buckets = {}
    for labels, value in samples(text, name + "_bucket"):
        bound = re.search(r'le="([^"]+)"', labels)
        if bound:
            buckets[float(bound[1])] = value  # float("+Inf") is inf
    if not buckets:
        raise KeyError(f"histogram {name} not on the metrics port")
    return {"count": gauge(text, name + "_count"), "sum": gauge(text, name + "_sum"), "buckets": buckets}


def histogram_delta_ms(before: dict, after: dict) -> dict:
    """Observations made between two snapshots of a histogram in seconds: their count, mean (ms) and the
    upper bounds (ms) of the buckets holding the median and the 90th percentile (None when beyond the last)."""
    count = after["count"] - before["count"]
    if count <= 0:
        return {"count": 0}
    cumulative = sorted((bound, n - before["buckets"].get(bound, 0)) for bound, n in after["buckets"].items())

    def bound_of(q: float):
        bound = next(b for b, n in cumulative if n >= q * count)
        return None if math.isinf(bound) else round(1000 * bound, 3)

    return {"count": int(count), "mean_ms": round(1000 * (after["sum"] - before["sum"]) / count, 2),
            "p50_ms_at_most": bound_of(0.5), "p90_ms_at_most": bound_of(0.9)}
