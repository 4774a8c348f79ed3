"""Every module of the server package and of benchmarks/ imports on a CPU-only install: GPU-only code (kernels,
GPU benchmarks) is otherwise never imported by CI, so a broken import there would only show on a lent GPU host."""
import importlib
import pkgutil

import pytest

import benchmarks
import qwen_triton

MODULES = sorted(m.name for m in pkgutil.walk_packages(qwen_triton.__path__, "qwen_triton."))
BENCHMARKS = sorted(m.name for m in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."))
LIBRARIES = {"benchmarks.checkout", "benchmarks.load_generator", "benchmarks.openai_load", "benchmarks.perf_analyzer",
             "benchmarks.quant_gpu", "benchmarks.timing"}


def test_the_gpu_modules_are_found():
    assert "qwen_triton.models.gemv" in MODULES
    assert {"benchmarks.gemv", "benchmarks.gpu", "benchmarks.attention"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", MODULES + BENCHMARKS)
def test_module_imports(name):
    module = importlib.import_module(name)
    if name in BENCHMARKS and name not in LIBRARIES:  # the rest are commands
        assert callable(getattr(module, "main", None)), f"{name} has no main() for python -m"
