"""Every module of the package imports on a CPU-only install: GPU-only code (kernels, GPU benchmarks) is
otherwise never imported by CI, so a broken import there would only show on a lent GPU host."""
import importlib
import pkgutil

import pytest

import qwen_triton

MODULES = sorted(m.name for m in pkgutil.walk_packages(qwen_triton.__path__, "qwen_triton."))


def test_the_package_has_its_gpu_modules():
    assert {"qwen_triton.models.gemv", "qwen_triton.bench.gemv", "qwen_triton.bench.gpu"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    module = importlib.import_module(name)
    if name.startswith("qwen_triton.bench.") and name != "qwen_triton.bench.timing":  # the rest are commands
        assert callable(getattr(module, "main", None)), f"{name} has no main() for python -m"
