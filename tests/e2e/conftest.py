"""A real tritonserver, started by the project's launcher on free loopback ports, serving the model
repository filled for the tiny engine."""
from pathlib import Path

import pytest

from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def triton(tiny_engine, tmp_path_factory):
    repo = tmp_path_factory.mktemp("model_repository")
    fill_repository(ROOT / "model_repository", values_for_engine(tiny_engine, device="cpu"), repo)
    server = TritonServer(repo, Ports.free(), log_file=repo / "server.log", exit_timeout_s=3)
    with server:
        yield server
    assert server.process.returncode is not None
