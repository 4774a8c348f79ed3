"""Where this checkout lies, and how a child interpreter (this one, or the GPU host's own with transformers)
runs a module of it: from the repository root, with src/ (qwen_triton) and the root (benchmarks, client) on
its PYTHONPATH, whether or not the package is installed in that interpreter."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL_REPOSITORY = ROOT / "model_repository"


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with src/ and the root first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH"))))
    return env


def run_module(python: str, module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` in its own process, from the root; stdout captured as text."""
    return subprocess.run([python, "-m", module, *args], cwd=ROOT, env=child_env(), check=True,
                          stdout=subprocess.PIPE, text=True)
