"""bench.gpu records the GPU host's test suites through run_pytest: its summary and exit status must be
pytest's own, failures included."""
import sys

from qwen_triton.bench.gpu_tests import run_pytest


def test_run_pytest_reports_passes_and_failures(tmp_path):
    (tmp_path / "test_a.py").write_text("def test_ok():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n")
    result = run_pytest(sys.executable, str(tmp_path / "test_a.py"))
    assert result["returncode"] == 1
    assert "1 failed" in result["summary"] and "1 passed" in result["summary"]


def test_run_pytest_appends_a_site_and_imports_the_package(tmp_path):
    (tmp_path / "test_b.py").write_text(
        "import sys\nimport qwen_triton\n\ndef test_site():\n    assert sys.path[-1] == 'extra-site'\n")
    result = run_pytest(sys.executable, str(tmp_path / "test_b.py"), extra_site="extra-site")
    assert result == {"returncode": 0, "summary": result["summary"]} and "1 passed" in result["summary"]
