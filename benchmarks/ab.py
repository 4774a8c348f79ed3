"""A/B of the package's code on one host, in one command: a benchmark module (engine_step, prefill, quant_gemv,
attention: those that run the engine or the kernels in their own process) runs alternately on this checkout's
src/ and on a baseline commit's, each run in a fresh interpreter, and every JSON line it prints comes back tagged
with the tree and the run. The baseline's src/ is a `git archive` of the commit in a temporary folder put first
on PYTHONPATH; benchmarks/ itself is always this checkout's. Not for served runs: the Python-backend stub ignores
PYTHONPATH (qwen_triton.serving.launcher).

    python -m benchmarks.ab --baseline 0974769 --runs 2 benchmarks.engine_step --batch 1 64 --quantized int4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .checkout import ROOT, child_env


def baseline_tree(commit: str, folder: Path) -> Path:
    """src/ of `commit`, extracted under folder; returns that src/."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    tar_path = folder / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def run_on(src: Path, module: str, args: list[str]) -> list[dict]:
    """`python -m module args` from the root with src first on PYTHONPATH; its JSON lines."""
    env = child_env()
    env["PYTHONPATH"] = f"{src}:{env['PYTHONPATH']}"
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit (or any git revision) to compare with")
    parser.add_argument("--runs", type=int, default=2, help="runs of each tree, alternating, this checkout's first")
    parser.add_argument("module", help="the benchmark module, e.g. benchmarks.engine_step")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args(argv)
    module_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    with tempfile.TemporaryDirectory(prefix="qwen-ab-") as folder:
        trees = {"checkout": ROOT / "src", args.baseline: baseline_tree(args.baseline, Path(folder))}
        for run in range(args.runs):
            for name, src in trees.items():
                for line in run_on(src, args.module, module_args):
                    print(json.dumps({"tree": name, "run": run, **line}), flush=True)


if __name__ == "__main__":
    main()
