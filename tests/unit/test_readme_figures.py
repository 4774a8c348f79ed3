"""The README's measured figures are the committed benchmark results, not numbers typed by hand."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    ends = [i for i in (README.find("\n## ", start + 1), README.find("\n### ", start + 1)) if i > 0]
    return README[start:min(ends) if ends else None]


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_gpu_table_matches_the_json(gpu):
    result = json.loads((ROOT / f"benchmarks/results/{gpu}.json").read_text())
    text = _section(f"### {gpu.upper()}")
    assert f"**{round(result['decode_bs1_tok_s'])}**" in text
    assert f"{result['ttft_512_ms']} ms" in text
    assert f"**{round(result['c64_output_tok_s']):,}**, {result['c64_failed_requests']} failed" in text
    assert f"{result['hf_bs1_tok_s']} / {round(result['hf_bs32_tok_s'])} tok/s" in text
    assert f"{result['ratio_decode_bs1_vs_hf_bs1']:.1f}x" in text
    if "ratio_bs32_vs_hf_bs32" in result:  # runs from 2026-12-05 on
        assert f"**{round(result['bs32_output_tok_s']):,}**" in text
        assert f"{result['ratio_bs32_vs_hf_bs32']:.1f}x" in text
    assert f"{round(result['bandwidth_floor_bs1_tok_s'])} tok/s" in text
    assert f"| {result['max_concurrency_2048_tokens']} " in text
    assert (ROOT / f"benchmarks/results/{gpu}.png").stat().st_size > 10_000
    for suite, run in result.get("tests", {}).items():  # runs from 2026-12-04 on record the test suites
        assert run["returncode"] == 0, (suite, run["summary"])
        passed = re.search(r"(\d+) passed", run["summary"]).group(1)
        assert f"{passed} passed" in text, suite
    for baseline in ("c64_prefill_steps_only", "c64_fixed_requests"):  # H200 run on: same-run baselines
        if baseline in result["served"]:
            assert f"{round(result['served'][baseline]['output_tok_s']):,}, 0 failed" in text


def test_cpu_table_matches_cpu_json():
    result = json.loads((ROOT / "benchmarks/results/cpu.json").read_text())
    text = _section("## Measured figures (CPU)")
    for load, perf in zip(result["streaming_load"], result["perf_analyzer"]):
        row = f"| {load['concurrency']} | {round(load['output_tok_s'])} | {round(load['ttft_ms_p50'])} ms |"
        assert row in text
        assert f"{perf['requests_per_s']:.2f} requests/s" in text


def test_the_reliability_page_shows_the_committed_results():
    import json

    from client.reliability_report import ab_markdown, markdown

    results = ROOT / "benchmarks" / "results"
    page = (ROOT / "docs" / "reliability.md").read_text()
    assert markdown(json.loads((results / "reliability_cpu.json").read_text()),
                    json.loads((results / "soak_cpu.json").read_text())) in page
    assert ab_markdown(json.loads((results / "h100_reliability_ab.json").read_text())) in page
