"""The installed package holds what the server runs: benchmarks, load generation, profilers and metric scraping
live in benchmarks/ and client/ at the top level, which pyproject does not install, and no module of the package
reaches for them (nor for matplotlib, a benchmark-only dependency), even inside a function."""
import ast
import importlib.util
import pkgutil
from pathlib import Path

import qwen_triton

TOOLING = {"bench", "loadtest", "server_metrics"}  # the tooling modules that once lived in the package
OUTSIDE = {"benchmarks", "client", "matplotlib"}  # top-level names the package must never import
MODULES = sorted(m.name for m in pkgutil.walk_packages(qwen_triton.__path__, "qwen_triton."))


def _source(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin)


def absolute_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports anywhere in a module (relative imports stay inside the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_has_no_tooling_modules():
    found = {name for name in MODULES if set(name.split(".")[1:]) & TOOLING}
    assert "qwen_triton.serving.launcher" in MODULES and not found, found


def test_no_module_of_the_package_imports_tooling():
    reaching = {name: sorted(absolute_imports(_source(name)) & OUTSIDE) for name in MODULES}
    assert {name: names for name, names in reaching.items() if names} == {}


def test_import_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from . import client\n\ndef plot():\n    import matplotlib.pyplot as plt\n"
                      "    from benchmarks.gpu import LIMITS\n")
    assert absolute_imports(module) == {"matplotlib", "benchmarks"}
