"""perf_analyzer, NVIDIA's load tool, run against the served ensemble: where the client wheel's binary is, the
libraries it needs, an --input-data file holding only the inputs we mean to send, and one measurement at a
fixed concurrency read back from its CSV report. Measures; asserts nothing."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from qwen_triton.schema import ENSEMBLE
from qwen_triton.serving.launcher import pytriton_root, wheel_libs

from .load_generator import DEFAULT_PROMPT


def perf_analyzer_binary() -> str:
    """The client wheel's perf_analyzer beside this interpreter, else the one on PATH (NGC SDK image)."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    return str(beside) if beside.is_file() else "perf_analyzer"


def perf_analyzer_env() -> dict[str, str]:
    """Environment in which the client wheel's perf_analyzer finds libb64.so.0d and libcudart.so.12."""
    env = dict(os.environ)
    root = pytriton_root()
    if root is None:
        return env
    link_dir = Path(sys.prefix) / "share" / "qwen-triton" / "perf-libs"
    link_dir.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        found = sorted(wheel_libs(root).glob(pattern))
        if found and not (link_dir / name).exists():
            (link_dir / name).symlink_to(found[0])
    libs = [str(link_dir), str(wheel_libs(root)), env.get("LD_LIBRARY_PATH")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, libs))
    return env


def write_input_data(path: Path, prompt: str, max_tokens: int, stream: bool = True, greedy: bool = True) -> Path:
    """perf_analyzer --input-data: only the inputs we mean to send, each with its shape."""
    entry = {
        "text_input": {"content": [prompt], "shape": list(ENSEMBLE.input("text_input").dims)},
        "max_tokens": {"content": [max_tokens], "shape": list(ENSEMBLE.input("max_tokens").dims)},
        "stream": {"content": [stream], "shape": list(ENSEMBLE.input("stream").dims)},
        "min_tokens": {"content": [max_tokens], "shape": list(ENSEMBLE.input("min_tokens").dims)},
    }
    if greedy:
        entry["temperature"] = {"content": [0.0], "shape": list(ENSEMBLE.input("temperature").dims)}
    path.write_text(json.dumps({"data": [entry]}, ensure_ascii=False, indent=1))
    return path


def run_perf_analyzer(url: str, workdir: Path, concurrency: int, max_tokens: int, measurement_ms: int = 4000,
                      prompt: str = DEFAULT_PROMPT, stream: bool = True, greedy: bool = True,
                      grpc_streaming: bool = True) -> dict:
    """grpc_streaming=False: unary ModelInfer, for a repository filled with --decoupled false."""
    data = write_input_data(workdir / "perf_input.json", prompt, max_tokens, stream, greedy)
    report = workdir / "perf_analyzer.csv"
    # --streaming: a decoupled ensemble is only driven over a gRPC stream.
    cmd = [perf_analyzer_binary(), "-m", "ensemble", "-i", "grpc", "-u", url,
           *(["--streaming"] if grpc_streaming else []), "--input-data", str(data),
           f"--concurrency-range={concurrency}:{concurrency}", f"--measurement-interval={measurement_ms}",
           "--measurement-mode=time_windows", "--max-trials=3", "--stability-percentage=100", "-f", str(report)]
    run = subprocess.run(cmd, env=perf_analyzer_env(), capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    with open(report) as f:
        row = next(csv.DictReader(f))
    return {"command": " ".join(cmd), "requests_per_s": float(row["Inferences/Second"]),
            "latency_p50_ms": float(row["p50 latency"]) / 1000, "latency_p99_ms": float(row["p99 latency"]) / 1000,
            "stdout_tail": run.stdout[-1500:]}
