"""benchmarks.ab: a benchmark module runs on this checkout's package and on a baseline commit's, alternately, each
run's JSON lines tagged with its tree. Each tree must really be the one imported."""
import json
from pathlib import Path

from benchmarks import ab
from benchmarks.checkout import ROOT


def test_each_tree_is_the_package_its_runs_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "ab_probe.py").write_text(
        "import json, sys, qwen_triton\nprint('not json')\n"
        "print(json.dumps({'package': qwen_triton.__file__, 'args': sys.argv[1:]}))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ab.main(["--baseline", "HEAD", "--runs", "2", "ab_probe", "--batch", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["tree"], r["run"]) for r in lines] == [("checkout", 0), ("HEAD", 0), ("checkout", 1), ("HEAD", 1)]
    assert all(r["args"] == ["--batch", "1"] for r in lines)
    for r in lines:
        inside_checkout = Path(r["package"]).is_relative_to(ROOT / "src")
        assert inside_checkout == (r["tree"] == "checkout"), r  # the baseline's copy, not this checkout's
        assert "qwen-ab-" in r["package"] or r["tree"] == "checkout", r


def test_the_baseline_tree_is_the_commits_src_not_the_working_trees(tmp_path):
    """An uncommitted change in the checkout stays out of the baseline (git archive, not a copy)."""
    src = ab.baseline_tree("HEAD", tmp_path)
    committed = ab.subprocess.run(["git", "show", "HEAD:src/qwen_triton/models/gemv.py"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
    assert (src / "qwen_triton" / "models" / "gemv.py").read_text() == committed
    assert not (src / "qwen_triton" / "__pycache__").exists()
