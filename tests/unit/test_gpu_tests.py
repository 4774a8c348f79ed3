"""benchmarks.gpu records the GPU host's test suites through run_pytest, and runs its other measurements as
modules of this checkout in child interpreters (run_module): pytest's summary and exit status must be its own,
failures included, and a child interpreter imports qwen_triton and benchmarks whatever its environment."""
import os
import subprocess
import sys

from benchmarks.checkout import child_env, run_module
from benchmarks.gpu_tests import run_pytest


def test_run_pytest_reports_passes_and_failures(tmp_path):
    (tmp_path / "test_a.py").write_text("def test_ok():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n")
    result = run_pytest(sys.executable, str(tmp_path / "test_a.py"))
    assert result["returncode"] == 1
    assert "1 failed" in result["summary"] and "1 passed" in result["summary"]


def test_run_pytest_appends_a_site_and_imports_the_package(tmp_path):
    (tmp_path / "test_b.py").write_text(
        "import sys\nimport qwen_triton\nimport benchmarks.sharegpt\n\n"
        "def test_site():\n    assert sys.path[-1] == 'extra-site'\n")
    result = run_pytest(sys.executable, str(tmp_path / "test_b.py"), extra_site="extra-site")
    assert result == {"returncode": 0, "summary": result["summary"]} and "1 passed" in result["summary"]


def test_child_env_puts_this_checkout_on_the_path(tmp_path):
    """As the GPU host's own interpreter (--hf-python) is: qwen_triton not installed in it, started elsewhere."""
    code = "import benchmarks.checkout, qwen_triton"
    bare = {"PATH": os.defpath}

    def run(env):  # -S: no site-packages, so not even this venv's editable install of qwen_triton
        return subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert run(child_env(bare)).returncode == 0, run(child_env(bare)).stderr
    assert run(bare).returncode == 1 and "ModuleNotFoundError" in run(bare).stderr


def test_run_module_runs_a_module_of_this_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--hf-python" in run_module(sys.executable, "benchmarks.gpu_tests", "--help").stdout
