"""Prefix caching served by a real tritonserver (an engine built with enable_kv_cache_reuse, CPU): a chat's second
turn reuses the KV blocks of its system prompt and first turn, counted on the metrics port, and answers as the
same weights without reuse do."""
import time
import uuid
from pathlib import Path

import pytest

from client.server_metrics import gauge, scrape
from qwen_triton.client import QwenClient
from qwen_triton.config import EngineLimits
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a careful assistant. " * 12  # four 16-token blocks and more
LIMITS = EngineLimits(dtype="float32", max_batch_size=16, max_input_len=256, max_seq_len=512,
                      enable_kv_cache_reuse=True)
GREEDY = dict(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def reuse_server(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix_reuse")
    engine = convert_checkpoint(tiny_checkpoint, root / "engine", LIMITS).path
    fill_repository(ROOT / "model_repository", values_for_engine(engine, device="cpu"), root / "repository")
    server = TritonServer(root / "repository", Ports.free(), log_file=root / "server.log", exit_timeout_s=3)
    with server:
        yield server


def reused_blocks(server, at_least: int = 0, timeout_s: float = 5.0) -> int:
    """The gauge once it reads at_least (the stats thread publishes at most every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = int(gauge(scrape(server.ports.metrics), "qwen_engine_reused_kv_blocks"))
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def turn(url: str, system: str, history: list) -> str:
    with QwenClient(url) as client:
        return client.generate("And then?", system_prompt=system, history=history, **GREEDY).text


def test_a_second_turn_reuses_the_first_and_answers_as_without_reuse(reuse_server, triton):
    system = f"{uuid.uuid4().hex} {SYSTEM}"  # its own first block: nothing cached from another test
    url, baseline_url = f"127.0.0.1:{reuse_server.ports.grpc}", f"127.0.0.1:{triton.ports.grpc}"
    before = reused_blocks(reuse_server)
    first = turn(url, system, [])
    assert reused_blocks(reuse_server, at_least=before + 1, timeout_s=1.0) == before
    history = [["And then?", first]]
    second = turn(url, system, history)
    after = reused_blocks(reuse_server, at_least=before + 4)
    assert after >= before + 4  # the system prompt alone fills four blocks
    assert (first, second) == (turn(baseline_url, system, []), turn(baseline_url, system, history))  # no reuse
