"""ShareGPT-like request lengths: a fixed, seeded distribution shipped as a file (sharegpt_lengths.json, beside this)
so every run sends the same load. Lognormal prompt and output lengths, mean about 200 each, clipped."""
from __future__ import annotations

import json
import random
from pathlib import Path

LENGTHS = Path(__file__).with_name("sharegpt_lengths.json")


def make_lengths(n: int = 512, seed: int = 0, mean: float = 200.0, sigma: float = 0.8,
                 low: int = 8, high: int = 1024) -> list[tuple[int, int]]:
    import math

    rng = random.Random(seed)
    mu = math.log(mean) - sigma ** 2 / 2  # lognormal with this mean
    draw = lambda: min(high, max(low, round(rng.lognormvariate(mu, sigma))))  # noqa: E731
    return [(draw(), draw()) for _ in range(n)]


def load_lengths(path: str | Path) -> list[tuple[int, int]]:
    return [tuple(pair) for pair in json.loads(Path(path).read_text())["requests"]]


def main():
    lengths = make_lengths()
    out = LENGTHS
    mean_in = sum(i for i, _ in lengths) / len(lengths)
    mean_out = sum(o for _, o in lengths) / len(lengths)
    out.write_text(json.dumps({"about": "python -m benchmarks.sharegpt: lognormal, seed 0, clipped to "
                               f"[8, 1024]; mean input {mean_in:.0f}, mean output {mean_out:.0f} tokens",
                               "requests": lengths}) + "\n")
    print(f"wrote {out}: {len(lengths)} requests, mean in {mean_in:.0f}, mean out {mean_out:.0f}")


if __name__ == "__main__":
    main()
