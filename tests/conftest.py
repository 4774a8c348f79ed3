"""Shared fixtures: the fake Triton utils module, a tiny random engine built by build/'s code, and a loader
for model_repository/*/1/model.py files."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# triton_python_backend_utils exists only inside a Triton stub process; in-process tests use the fake.
if "triton_python_backend_utils" not in sys.modules:
    sys.modules["triton_python_backend_utils"] = load_module(
        "triton_python_backend_utils", ROOT / "tests" / "support" / "fake_pb_utils.py")


def load_model_py(model_name: str):
    return load_module(f"{model_name}_model", ROOT / "model_repository" / model_name / "1" / "model.py")


TEST_LIMITS = dict(dtype="float32", max_batch_size=16, max_input_len=256, max_seq_len=512,
                   max_num_batched_tokens=2048, block_size=16)


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory) -> Path:
    """A v1-layout (Qwen-7B-Chat) random checkpoint converted by build/'s converter."""
    from qwen_triton.config import EngineLimits
    from qwen_triton.tools.convert import convert_checkpoint
    from qwen_triton.tools.random_checkpoint import make_random_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    make_random_checkpoint(root / "hf", flavour="qwen", seed=0)
    convert_checkpoint(root / "hf", root / "engine", EngineLimits(**TEST_LIMITS))
    return root / "engine"


@pytest.fixture(scope="session")
def model_py():
    """Loads model_repository/<name>/1/model.py as Triton would (by path, with the fake utils)."""
    return load_model_py
