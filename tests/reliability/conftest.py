"""The reliability suite's servers: an engine whose requests can run long (2,000 tokens take seconds on this
CPU, so a cancellation that did not reach the engine shows), served by tritonserver directly (probes) or by
the launcher that `make serve` runs (shutdown, killed stubs)."""
from pathlib import Path

import pytest

from client.reliability import Launched, Server
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def long_repo(long_engine, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("reliability") / "repo"
    fill_repository(ROOT / "model_repository", values_for_engine(long_engine, device="cpu"), repo)
    return repo


@pytest.fixture(scope="module")
def triton(long_repo, tmp_path_factory):
    server = TritonServer(long_repo, Ports.free(), log_file=tmp_path_factory.mktemp("log") / "server.log",
                          exit_timeout_s=5)
    with server:
        yield server


@pytest.fixture
def probe(triton) -> Server:
    return Server(f"127.0.0.1:{triton.ports.grpc}", triton.ports.metrics)


@pytest.fixture
def launched(long_repo, tmp_path):
    server = Launched(long_repo, Ports.free(), tmp_path / "launcher.log").start()
    yield server
    server.stop()
