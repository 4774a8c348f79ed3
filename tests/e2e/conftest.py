"""A real tritonserver, started by the project's launcher on free loopback ports, serving the model
repository filled for the tiny engine: decoupled (the default) and --decoupled false ("unary"). Every test
runs against both; one marked `decoupled_only` (streaming, cancellation probes, the BLS model, which need
several responses per request) is skipped on the unary repository, where streaming is refused by name
(tests/e2e/test_unary.py)."""
from pathlib import Path

import pytest

from client.reliability import Server
from qwen_triton.openai_server.process import OpenAIServerProcess
from qwen_triton.serving.launcher import Ports, TritonServer, free_ports
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "decoupled_only: needs several responses per request (skipped when unary)")


@pytest.fixture(scope="session", params=["decoupled", "unary"])
def triton(request, tiny_engine, tmp_path_factory):
    decoupled = request.param == "decoupled"
    repo = tmp_path_factory.mktemp(f"model_repository_{request.param}")
    fill_repository(ROOT / "model_repository", values_for_engine(tiny_engine, device="cpu", decoupled=decoupled), repo)
    server = TritonServer(repo, Ports.free(), log_file=repo / "server.log", exit_timeout_s=3)
    server.decoupled = decoupled
    with server:
        yield server
    assert server.process.returncode is not None


@pytest.fixture(autouse=True)
def _skip_decoupled_only_when_unary(request):
    if request.node.get_closest_marker("decoupled_only") and "triton" in request.fixturenames:
        if not request.getfixturevalue("triton").decoupled:
            pytest.skip("needs the decoupled repository: --decoupled false answers once per request")


@pytest.fixture(scope="module")
def frontend(triton, tmp_path_factory):
    """The OpenAI server (started as `make serve` starts it) in front of `triton`'s gRPC port, on a free loopback
    port; `.engine` reads the engine's occupancy from Triton's metrics."""
    log = tmp_path_factory.mktemp("openai_server") / "openai_server.log"
    with OpenAIServerProcess(f"127.0.0.1:{triton.ports.grpc}", port=free_ports(1)[0], log_file=log) as server:
        server.engine = Server(f"127.0.0.1:{triton.ports.grpc}", triton.ports.metrics)
        yield server


@pytest.fixture(scope="module")
def openai_url(frontend) -> str:
    """Base URL (http://127.0.0.1:PORT) of the OpenAI server."""
    return frontend.base_url

