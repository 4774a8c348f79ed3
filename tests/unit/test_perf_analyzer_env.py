"""The environment benchmarks/perf_analyzer.py runs the client wheel's perf_analyzer in: the libraries it needs
under their real names, found in the nvidia-pytriton wheel the launcher uses (typed by hand, the binary goes
through tools/perf_analyzer.sh instead: test_perf_analyzer_wrapper.py)."""
import os
from pathlib import Path

from benchmarks.perf_analyzer import perf_analyzer_env


def test_perf_analyzer_finds_its_libraries():
    libs = perf_analyzer_env()["LD_LIBRARY_PATH"].split(os.pathsep)
    assert any((Path(d) / "libb64.so.0d").exists() for d in libs)
