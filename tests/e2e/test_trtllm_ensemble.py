"""`runtime: tensorrt_llm` end to end: the build script's engine folder (fake TensorRT-LLM tools), templates
filled for that runtime, a real tritonserver whose Python models import the fake `tensorrt_llm` package
(an overlay environment: the project's venv plus the fake), driven through the ensemble over gRPC."""
import json
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from qwen_triton.client import QwenClient
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine
from qwen_triton.vocab import IM_END_ID

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
FAKE_TRTLLM = ROOT / "tests" / "support" / "fake_trtllm"
ANSWER = "你好！我是通义千问，很高兴为你服务。Streaming 😀 works."


def overlay_env(path):
    """A venv whose site-packages adds the fake package, then this venv's (with its .pth files)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "qwen_overlay.pth").write_text(
        f"{FAKE_TRTLLM}\nimport site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return path / "bin"


@pytest.fixture(scope="module")
def trt_triton(trtllm_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("trt_e2e")
    engine = root / "engine"
    shutil.copytree(trtllm_engine, engine)
    tokenizer = QwenTokenizer.load()
    script = tokenizer.encode(ANSWER) + [IM_END_ID] + tokenizer.encode("never sent")
    (engine / "fake_executor.json").write_text(json.dumps({"tokens": script, "step_ms": 2}))
    repo = root / "model_repository"
    fill_repository(ROOT / "model_repository", values_for_engine(engine, runtime="tensorrt_llm"), repo)
    server = TritonServer(repo, Ports.free(), log_file=root / "server.log", exit_timeout_s=3,
                          python_bin=overlay_env(root / "overlay"))
    with server:
        yield server


@pytest.fixture
def client(trt_triton):
    c = QwenClient(f"127.0.0.1:{trt_triton.ports.grpc}")
    yield c
    c.close()


def test_streams_the_executor_tokens_as_whole_characters(trt_triton, client):
    chunks = list(client.stream("你好，请介绍一下你自己。", max_tokens=200))
    assert "".join(c.text for c in chunks) == ANSWER
    assert len([c for c in chunks if c.text]) > 10 and all("\ufffd" not in c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].num_input_tokens > 10
    assert "runtime=tensorrt_llm" in trt_triton.log_file.read_text()


def test_not_streamed_stop_string_and_length(client):
    assert client.generate("hi", max_tokens=200).text == ANSWER
    stopped = client.generate("hi", max_tokens=200, stop_words=["通义"])
    assert stopped.text == "你好！我是" and stopped.finish_reason == "stop"
    short = client.generate("hi", max_tokens=3)
    assert short.finish_reason == "length" and short.num_output_tokens == 3


def test_bad_request_fails_alone_and_the_engine_reports_its_cache(trt_triton, client):
    with pytest.raises(InferenceServerException, match="top_p"):
        client.generate("hi", top_p=1.5)
    assert client.generate("hi", max_tokens=200).text == ANSWER
    url = f"http://127.0.0.1:{trt_triton.ports.metrics}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    free = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("qwen_engine_free_kv_blocks")]
    assert free and free[0] > 0
