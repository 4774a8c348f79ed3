"""Weight-only int8 (float32 and bfloat16) and int4 engines and an fp8 one (build.convert's code, from the tiny v1
checkpoint) served by a real tritonserver through the decoupled model repository, CPU: a greedy answer streams,
its chunks equal the same engine's non-streamed answer, and the served model's engine folder records its
quantization."""
import json
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from qwen_triton.client import QwenClient
from qwen_triton.config import ENGINE_CONFIG_FILE, FP8_ALGO, EngineLimits, QuantConfig, load_engine_folder
from qwen_triton.schema import TENSORRT_LLM
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
LIMITS = EngineLimits(dtype="float32", max_batch_size=4, max_input_len=256, max_seq_len=512)
# The tiny model's hidden size is 64: int4 groups of 32 (build.convert's default of 128 needs K % 128 == 0).
QUANT = {"int8": QuantConfig("int8"), "int4": QuantConfig("int4", group_size=32),
         "fp8": QuantConfig(quant_algo=FP8_ALGO), "int8-bfloat16": QuantConfig("int8")}
# Stored and served in bfloat16, where the CPU runs torch's int8 kernel rather than the chunked dequantize.
DTYPES = {"int8-bfloat16": "bfloat16"}


@pytest.fixture(scope="module", params=list(QUANT))
def quantized_server(request, tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"quantized_{request.param}")
    engine = convert_checkpoint(tiny_checkpoint, root / "engine", LIMITS, dtype=DTYPES.get(request.param),
                                quant=QUANT[request.param]).path
    fill_repository(ROOT / "model_repository", values_for_engine(engine, device="cpu", decoupled=True),
                    root / "repository")
    server = TritonServer(root / "repository", Ports.free(), log_file=root / "server.log", exit_timeout_s=3)
    with server:
        yield request.param, server
    assert server.process.returncode is not None


@pytest.fixture
def client(quantized_server):
    _, server = quantized_server
    c = QwenClient(f"127.0.0.1:{server.ports.grpc}")
    yield c
    c.close()


def test_the_served_engine_records_its_quantization(quantized_server):
    mode, server = quantized_server
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports.grpc}")
    config = grpc.get_model_config(TENSORRT_LLM.name, as_json=True)["config"]
    grpc.close()
    engine_dir = Path(config["parameters"]["engine_dir"]["string_value"])
    recorded = json.loads((engine_dir / ENGINE_CONFIG_FILE).read_text())["quantization"]
    assert recorded["weight_only_precision"] == QUANT[mode].weight_only_precision
    assert recorded["group_size"] == QUANT[mode].group_size and recorded["quant_algo"] == QUANT[mode].quant_algo
    assert load_engine_folder(engine_dir).config.quantization == QUANT[mode]


@pytest.mark.parametrize("query", ["Tell me a story.", "用中文写一首关于春天的诗。"])
def test_a_greedy_answer_streams_and_equals_the_non_streamed_one(client, query):
    whole = client.generate(query, max_tokens=32, temperature=0.0)
    chunks = list(client.stream(query, max_tokens=32, temperature=0.0))
    assert whole.num_output_tokens > 0 and len(chunks) > 1
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].num_output_tokens == whole.num_output_tokens
