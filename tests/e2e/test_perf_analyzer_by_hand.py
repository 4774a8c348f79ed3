"""`.venv/bin/perf_analyzer` as a user types it (the wrapper `make venv` installs, no LD_LIBRARY_PATH of ours)
measures the ensemble for about a second (docs/tools.md)."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.perf_analyzer import write_input_data

pytestmark = [pytest.mark.e2e, pytest.mark.decoupled_only]
PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


@pytest.mark.skipif(not PERF_ANALYZER.is_file(), reason="no perf_analyzer beside this Python")
def test_perf_analyzer_typed_by_hand_measures_the_ensemble(triton, tmp_path):
    data = write_input_data(tmp_path / "input.json", "hello", max_tokens=4)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    cmd = [str(PERF_ANALYZER), "-m", "ensemble", "-i", "grpc", "-u", f"127.0.0.1:{triton.ports.grpc}", "--streaming",
           "--input-data", str(data), "--concurrency-range", "1", "--measurement-interval", "1000",
           "--max-trials", "3", "--stability-percentage", "100", "-f", str(tmp_path / "report.csv")]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with open(tmp_path / "report.csv") as f:
        assert float(next(csv.DictReader(f))["Inferences/Second"]) > 0
