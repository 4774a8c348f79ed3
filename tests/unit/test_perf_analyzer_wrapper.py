"""`.venv/bin/perf_analyzer` (and perf_client) start when typed by hand: `make venv` puts tools/perf_analyzer.sh
there, which finds the libb64/libcudart the wheel's binary needs (docs/tools.md). A 1 s run against the real
server through the same path is in tests/e2e/test_perf_analyzer_by_hand.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # not resolved: .venv/bin, where the user types it
MARK = b"qwen-triton perf_analyzer wrapper"

pytestmark = pytest.mark.skipif(not (VENV_BIN / "perf_analyzer").is_file(),
                                reason="no perf_analyzer beside this Python (not a venv made by `make venv`)")


def by_hand(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """As from a fresh shell: no LD_LIBRARY_PATH, another working directory."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run([str(path), "--version"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["perf_analyzer", "perf_client"])
def test_venv_binary_is_the_wrapper_and_starts(name, tmp_path):
    path = VENV_BIN / name
    with open(path, "rb") as f:
        assert MARK in f.read(256), f"{path} is not tools/perf_analyzer.sh: run `make venv`"
    assert (ROOT / "tools" / "perf_analyzer.sh").read_bytes() == path.read_bytes(), "stale wrapper: run `make venv`"
    run = by_hand(path, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Perf Analyzer Version 2.51" in run.stdout + run.stderr


def test_a_symlink_to_the_wrapper_starts_too(tmp_path):
    """How the GenAI-Perf venv (.venv-tools) puts perf_analyzer on its PATH."""
    (tmp_path / "bin").mkdir()
    link = tmp_path / "bin" / "perf_analyzer"
    link.symlink_to(VENV_BIN / "perf_analyzer")
    run = by_hand(link, tmp_path)
    assert run.returncode == 0 and "Perf Analyzer Version" in run.stdout + run.stderr, run.stdout + run.stderr
