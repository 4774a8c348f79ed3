"""Fixtures shared by the GPU tests (test_kernels.py, test_graphs.py, test_steps.py; each skipped without a
CUDA device): a tiny random Qwen2 engine built by build/'s converter, its limits and the prompts run on it."""
import pytest

from qwen_triton.config import EngineLimits
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint


@pytest.fixture(scope="session")
def limits() -> EngineLimits:
    return EngineLimits(dtype="float32", max_batch_size=8, max_input_len=128, max_seq_len=512, block_size=16)


@pytest.fixture(scope="session")
def prompts() -> list[list[int]]:
    return [[151644, 8948, 198, 2610, 525, 264], [9707, 11, 1879], list(range(1000, 1040))]


@pytest.fixture(scope="session")
def folder(tmp_path_factory, limits):
    root = tmp_path_factory.mktemp("gpu")
    make_random_checkpoint(root / "hf", "qwen2", seed=5)
    return convert_checkpoint(root / "hf", root / "engine", limits)

