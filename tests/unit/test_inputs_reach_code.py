"""Every input the ensemble declares is read by the code its wiring leads to: preprocessing's request parsing,
or tensorrt_llm's (through the ensemble's input_map). A declared input nothing reads would be accepted and
silently dropped."""
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from qwen_triton.schema import ENSEMBLE, NEUTRAL_ENSEMBLE, NEUTRAL_TENSORRT_LLM, TENSORRT_LLM, TensorSpec
from qwen_triton.serving.chat_request import ChatRequest
from qwen_triton.serving.llm_request import LLMRequest
from qwen_triton.tools.fill_templates import TemplateValues, fill_repository

ROOT = Path(__file__).resolve().parents[2]


class Reads(dict):
    """The values a parser is given, remembering every name it looks up."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


NEUTRAL = {n.spec.name: n.off for n in (*NEUTRAL_ENSEMBLE, *NEUTRAL_TENSORRT_LLM)}


def _value(spec: TensorSpec):
    """A value that the parser accepts: the neutral one for features the engine lacks."""
    if spec.name in NEUTRAL and NEUTRAL[spec.name] is not None:
        return np.array([NEUTRAL[spec.name]], dtype=spec.numpy_dtype)
    if spec.dtype == "STRING":
        return np.array([b"" if spec.name in NEUTRAL else b"hi"], dtype=object)
    if spec.name in NEUTRAL:  # refused whenever present: absent means off, so an empty tensor
        return np.zeros([0] * len(spec.dims), dtype=spec.numpy_dtype)
    if spec.name == "embedding_bias_weights":
        return np.array([1.0], dtype=np.float32)
    if spec.dims == (2, -1):
        return np.array([[5], [1]], dtype=np.int32)
    return np.ones([1] * len(spec.dims), dtype=spec.numpy_dtype).reshape(-1)


@pytest.fixture(scope="module")
def wiring(tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    fill_repository(ROOT / "model_repository", TemplateValues(engine_dir="/engines/x", max_batch_size=4), out)
    config = text_format.Parse((out / "ensemble" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {step.model_name: dict(step.input_map) for step in config.ensemble_scheduling.step}


def test_every_ensemble_input_is_read_by_the_code_it_is_wired_to(wiring):
    chat = Reads({t.name: _value(t) for t in ENSEMBLE.inputs if t.name in wiring["preprocessing"]})
    chat["text_input"] = np.array([b"hi"], dtype=object)
    chat["embedding_bias_words"] = np.array([b"hi"], dtype=object)
    ChatRequest.from_inputs(chat)
    llm_names = {model_input for model_input, tensor in wiring["tensorrt_llm"].items() if not tensor.startswith("_")}
    llm = Reads({name: _value(TENSORRT_LLM.input(name)) for name in llm_names})
    llm.update(input_ids=np.array([1, 2], dtype=np.int32), request_output_len=np.array([4], dtype=np.int32))
    LLMRequest.from_inputs(llm)
    reached = chat.read | {tensor for model_input, tensor in wiring["tensorrt_llm"].items() if model_input in llm.read}
    unread = {t.name for t in ENSEMBLE.inputs} - reached
    assert not unread, f"declared on the ensemble but read by nothing: {sorted(unread)}"


def test_the_check_would_see_an_input_nothing_reads():
    values = Reads({"text_input": np.array([b"hi"], dtype=object), "nobody_reads_this": np.ones(1)})
    ChatRequest.from_inputs(values)
    assert "nobody_reads_this" not in values.read and "text_input" in values.read
