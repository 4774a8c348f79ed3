"""The test suites benchmarks.gpu records beside its figures, run on the GPU host: tests/gpu with this interpreter
(the bundle's) and tests/fidelity with the one that has transformers (the host's own: transformers does not
import under the bundle's numpy 1.26), the bundle's site-packages appended there for pytest."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig

from .checkout import ROOT, child_env


def run_pytest(python: str, suite: str, extra_site: str | None = None) -> dict:
    """pytest -q on `suite` (a path, relative to the repository root or absolute) in its own process ->
    {"returncode", "summary"}: pytest's last line ("45 passed, 4 skipped in 90.1s")."""
    append = f"sys.path.append({extra_site!r}); " if extra_site else ""
    code = f"import sys; {append}import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {suite!r}]))"
    proc = subprocess.run([python, "-c", code], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"returncode": proc.returncode, "summary": lines[-1].strip("= ") if lines else ""}


def run_suites(hf_python: str) -> dict:
    return {"gpu": run_pytest(sys.executable, "tests/gpu"),
            "fidelity": run_pytest(hf_python, "tests/fidelity", sysconfig.get_paths()["purelib"])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hf-python", default=sys.executable, help="interpreter with transformers (the host's own)")
    results = run_suites(parser.parse_args(argv).hf_python)
    print(json.dumps(results, indent=2))
    sys.exit(max(r["returncode"] for r in results.values()))


if __name__ == "__main__":
    main()
