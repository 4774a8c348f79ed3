"""A repository filled with --decoupled false: unary gRPC ModelInfer, HTTP /infer and /generate, and
perf_analyzer without --streaming work against ensemble and tensorrt_llm, with the same greedy text as the
decoupled (default) repository; streaming is refused by name."""
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from benchmarks.perf_analyzer import run_perf_analyzer
from client.nvidia_clients import inflight_client_inputs
from qwen_triton.client import QwenClient
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.text.tokenizer import QwenTokenizer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
QUERY = "Tell me about the sea."
GREEDY = {"max_tokens": 16, "temperature": 0.0}


@pytest.fixture(scope="module")
def unary(tiny_engine, tmp_path_factory):
    repo = tmp_path_factory.mktemp("unary_repository")
    fill_repository(ROOT / "model_repository", values_for_engine(tiny_engine, device="cpu", decoupled=False), repo)
    assert "decoupled: false" in (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    with TritonServer(repo, Ports.free(), log_file=repo / "server.log", exit_timeout_s=3) as server:
        yield server


def _inputs(values: dict) -> list:
    tensors = []
    for name, value in values.items():
        array = np.asarray(value)
        tensor = grpcclient.InferInput(name, array.shape, np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _ensemble_values(stream: bool = False) -> dict:
    return {"text_input": np.array([[QUERY]], dtype=object), "max_tokens": np.array([[16]], dtype=np.int32),
            "temperature": np.array([[0.0]], dtype=np.float32), "stream": np.array([[stream]])}


@pytest.fixture(scope="module")
def expected(triton) -> str:
    """The decoupled repository's greedy text for the same request."""
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as client:
        return client.generate(QUERY, **GREEDY).text


def test_unary_grpc_infer_on_the_ensemble(unary, expected):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{unary.ports.grpc}")
    result = client.infer("ensemble", _inputs(_ensemble_values()))
    assert result.as_numpy("text_output")[0].decode() == expected
    assert result.as_numpy("finish_reason")[0] in (b"length", b"stop")


def test_http_infer_and_generate_on_the_ensemble(unary, expected):
    base = f"http://127.0.0.1:{unary.ports.http}/v2/models/ensemble"
    body = {"inputs": [{"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": [QUERY]},
                       {"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [16]},
                       {"name": "temperature", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}
    reply = _post(f"{base}/infer", body)
    (text,) = [o for o in reply["outputs"] if o["name"] == "text_output"]
    assert text["data"] == [expected]
    generated = _post(f"{base}/generate", {"text_input": QUERY, "max_tokens": 16, "temperature": 0.0})
    assert generated["text_output"] == expected


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def test_streaming_is_refused_by_name(unary):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{unary.ports.grpc}")
    with pytest.raises(InferenceServerException) as refused:
        client.infer("ensemble", _inputs(_ensemble_values(stream=True)), client_timeout=60)
    assert "stream: " in str(refused.value) and "decoupled" in str(refused.value)


def test_inflight_batcher_client_unary_path_on_tensorrt_llm(unary, expected):
    """inflight_batcher_llm_client.py without --streaming: async_infer with parameters={'Streaming': False};
    tokens = list(output_ids[0][0])."""
    tokenizer = QwenTokenizer.load()
    ids = tokenizer.encode(QUERY)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{unary.ports.grpc}")
    result = client.infer("tensorrt_llm", _inputs(inflight_client_inputs(ids, False)), request_id="1",
                          parameters={"Streaming": False})
    tokens = list(result.as_numpy("output_ids")[0][0])
    assert tokens and result.as_numpy("sequence_length")[0][0] == len(tokens)


def test_perf_analyzer_without_streaming(unary, tmp_path):
    result = run_perf_analyzer(f"127.0.0.1:{unary.ports.grpc}", tmp_path, concurrency=2, max_tokens=8,
                               measurement_ms=1500, stream=False, grpc_streaming=False)
    assert result["requests_per_s"] > 0 and "--streaming" not in result["command"]
