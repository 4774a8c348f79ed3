"""The README's measured figures are the committed benchmark results, not numbers typed by hand."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_generated_figures_are_current():
    """docs/benchmarks.md and the README's figures block are what client.benchmarks_doc makes of the JSON."""
    from client import benchmarks_doc

    assert benchmarks_doc.stale(ROOT) == [], "run python -m client.benchmarks_doc"
    assert benchmarks_doc.main(["--check"]) == 0
    assert benchmarks_doc.BEGIN in README and benchmarks_doc.END in README
    for gpu in ("h100", "h200"):
        assert (ROOT / f"benchmarks/results/{gpu}.png").stat().st_size > 10_000


@pytest.mark.parametrize("name, key, value", [("h100", "decode_bs1_tok_s", 1.0), ("h200", "c64_output_tok_s", 1.0),
                                              ("h100", "max_concurrency_2048_tokens", 1),
                                              ("cpu", "streaming_load", None),
                                              ("openai_frontend_cpu", "summary", None)])
def test_a_changed_result_makes_the_check_fail(name, key, value, tmp_path):
    from client import benchmarks_doc

    results = benchmarks_doc.load_results(ROOT)
    changed = json.loads(json.dumps(results))
    if key == "streaming_load":
        changed[name][key][0]["output_tok_s"] += 100
    elif key == "summary":
        changed[name][key]["c64"]["ratio_output_tok_s_openai_over_grpc"] = 0.5
    else:
        changed[name][key] = value
    before, after = benchmarks_doc.generate(ROOT, results), benchmarks_doc.generate(ROOT, changed)
    assert before[benchmarks_doc.DOC] != after[benchmarks_doc.DOC]
    assert before[benchmarks_doc.README] != after[benchmarks_doc.README]
    assert benchmarks_doc.stale(ROOT, changed) == [benchmarks_doc.DOC, benchmarks_doc.README]
    # --check on a copy whose JSON changed fails
    for sub in ("benchmarks/results", "docs"):
        (tmp_path / sub).mkdir(parents=True)
    for path in (benchmarks_doc.DOC, benchmarks_doc.README):
        (tmp_path / path).write_text((ROOT / path).read_text())
    for other, result in changed.items():
        (tmp_path / f"benchmarks/results/{other}.json").write_text(json.dumps(result))
    assert benchmarks_doc.main(["--check", "--root", str(tmp_path)]) == 1


def test_the_reliability_page_shows_the_committed_results():
    import json

    from client.reliability_report import ab_markdown, markdown

    results = ROOT / "benchmarks" / "results"
    page = (ROOT / "docs" / "reliability.md").read_text()
    assert markdown(json.loads((results / "reliability_cpu.json").read_text()),
                    json.loads((results / "soak_cpu.json").read_text())) in page
    assert ab_markdown(json.loads((results / "h100_reliability_ab.json").read_text())) in page


def test_a_run_with_quantized_modes_shows_each_in_the_page_and_the_readme():
    """benchmarks.gpu's quantized fields (benchmarks/quant_gpu.py summary_fields) reach both generated files."""
    from benchmarks.quant_gpu import summary_fields
    from client import benchmarks_doc

    results = benchmarks_doc.load_results(ROOT)
    run = {"decode_bytes_per_step": 7_727_423_488, "bandwidth_floor_bs1_tok_s": 390.8,
           "bs1": {"itl_ms_mean": 3.125}, "ttft_512_samples_ms": [9.5, 9.0, 9.9],
           "c64": {"output_tok_s": 6543.2, "failed": 0}}
    unquantized = {k: v for k, v in results["h100"].items() if not k.startswith(("int8_", "int4_", "fp8_", "quant_"))}
    results["h100"] = {**unquantized, **summary_fields({"int8": run}, 14_197_989_376), "served": {}}
    generated = benchmarks_doc.generate(ROOT, results)
    for text in (generated[benchmarks_doc.DOC], generated[benchmarks_doc.README]):
        assert "int8" in text and "320" in text and "9.5 ms" in text and "6,543" in text
        assert "int4" not in text.split("Quantized")[-1][:200]  # a mode the run did not ask for is not shown
    assert "7.20 GiB of weights read per step" in generated[benchmarks_doc.DOC]
    # A mode the run asked for and could not serve is shown as failed, not left out.
    results["h100"]["served"] = {"quantized_int4_error": "RuntimeError: tritonserver exited with 1"}
    generated = benchmarks_doc.generate(ROOT, results)
    for text in (generated[benchmarks_doc.DOC], generated[benchmarks_doc.README]):
        assert "int4 failed" in text or "int4: failed in this run" in text
    # A mode the run asked for and never reached (cut short) is shown as such.
    results["h100"]["quantized_pending"] = ["fp8"]
    generated = benchmarks_doc.generate(ROOT, results)
    assert "fp8: not reached in this run" in generated[benchmarks_doc.DOC]
    assert "fp8 not measured: the run ended before it" in generated[benchmarks_doc.README]
