"""The OpenAI server (`python -m qwen_triton.openai_server`, started as `make serve` starts it) in front of the e2e
`triton` fixture's gRPC port, on a free loopback port: a test module imports `openai_url` to get its base URL."""
import socket

import pytest

from qwen_triton.openai_server.process import OpenAIServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_url(triton, tmp_path_factory):
    """Base URL (http://127.0.0.1:PORT) of an OpenAI server talking to `triton` over gRPC."""
    log = tmp_path_factory.mktemp("openai_server") / "server.log"
    with OpenAIServerProcess(f"127.0.0.1:{triton.ports.grpc}", port=free_port(), log_file=log) as server:
        yield server.base_url
