"""Shared fixtures: the fake Triton utils module, a tiny random engine built by build/'s code, and a loader
for model_repository/*/1/model.py files."""
import importlib.util
import json
import os
import subprocess
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


TRITON = ROOT / ".venv" / "triton-interpreter"  # Triton and its ptxas, outside the server's environment (make test)


@pytest.fixture(scope="session")
def run_triton_script():
    """run(script, **env) -> the JSON lines a tests/support script printed, run in its own process with the
    Triton above on its path (the kernels are made at import, so TRITON_INTERPRET must be set, or not, before);
    `env` is added to this process's environment without TRITON_INTERPRET. Skips when Triton is missing."""
    if not (TRITON / "triton").is_dir():
        pytest.skip(f"no Triton at {TRITON} (make test installs it)")

    def run(script: Path, **env: str) -> list[dict]:
        full = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
        full.update(env, PYTHONPATH=os.pathsep.join([str(TRITON), str(ROOT / "src"), str(ROOT)]))
        proc = subprocess.run([sys.executable, str(script)], env=full, capture_output=True, text=True,
                              timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    return run


TEST_LIMITS = dict(dtype="float32", max_batch_size=16, max_input_len=256, max_seq_len=512,
                   max_num_batched_tokens=2048, block_size=16)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A v1-layout (Qwen-7B-Chat) random Hugging Face checkpoint."""
    from qwen_triton.tools.random_checkpoint import make_random_checkpoint

    hf_dir = tmp_path_factory.mktemp("tiny") / "hf"
    make_random_checkpoint(hf_dir, flavour="qwen", seed=0)
    return hf_dir


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint) -> Path:
    """The tiny checkpoint converted by build/'s converter."""
    from qwen_triton.config import EngineLimits
    from qwen_triton.tools.convert import convert_checkpoint

    engine = tiny_checkpoint.parent / "engine"
    convert_checkpoint(tiny_checkpoint, engine, EngineLimits(**TEST_LIMITS))
    return engine


# An engine whose answers can run for seconds on a CPU (2,000 tokens), so that a cancellation or Stop that did not
# reach the engine shows, however slow the client that sends it.
LONG_LIMITS = dict(dtype="float32", max_batch_size=32, max_input_len=1024, max_seq_len=4096,
                   max_num_batched_tokens=4096, block_size=16)


@pytest.fixture(scope="session")
def long_engine(tiny_checkpoint) -> Path:
    from qwen_triton.config import EngineLimits
    from qwen_triton.tools.convert import convert_checkpoint

    engine = tiny_checkpoint.parent / "long_engine"
    convert_checkpoint(tiny_checkpoint, engine, EngineLimits(**LONG_LIMITS))
    return engine


FAKE_TRTLLM = ROOT / "tests" / "support" / "fake_trtllm"


@pytest.fixture(scope="session")
def trtllm():
    """The fake `tensorrt_llm.bindings.executor` (TensorRT-LLM 0.14.0's names), importable from now on."""
    sys.path.insert(0, str(FAKE_TRTLLM))
    import tensorrt_llm.bindings.executor as executor

    assert Path(executor.__file__).is_relative_to(FAKE_TRTLLM), "a real tensorrt_llm shadows the fake"
    return executor


@pytest.fixture(scope="session")
def trtllm_engine(tiny_checkpoint, tmp_path_factory, trtllm) -> Path:
    """An engine folder made by the TensorRT-LLM build's real run path, with the fake TensorRT-LLM tools."""
    import os

    from qwen_triton.trtllm.build import TrtllmBuildOptions, run_build

    out = tmp_path_factory.mktemp("trtllm") / "engine"
    opts = TrtllmBuildOptions(hf_dir=tiny_checkpoint, output_dir=out, max_seq_len=TEST_LIMITS["max_seq_len"],
                              max_input_len=TEST_LIMITS["max_input_len"], max_batch_size=8, max_num_tokens=1024,
                              trtllm_examples=FAKE_TRTLLM / "examples", python=sys.executable)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{FAKE_TRTLLM / 'bin'}{os.pathsep}{path}"
    try:
        run_build(opts, progress=lambda line: None)
    finally:
        os.environ["PATH"] = path
    return out


@pytest.fixture(scope="session")
def model_py():
    """Loads model_repository/<name>/1/model.py as Triton would (by path, with the fake utils)."""
    return load_model_py
