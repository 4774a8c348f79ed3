"""The config.pbtxt templates agree with qwen_triton.schema, and template filling fails loudly."""
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from qwen_triton.errors import ConfigError
from qwen_triton.schema import (ALIASES, ALL_MODELS, ENSEMBLE, PREPROCESSING, TENSORRT_LLM,
                                 TRTLLM_SAMPLING_NAMES)
from qwen_triton.serving.model_params import LLMModelParams, parse_parameters
from qwen_triton.tools.fill_templates import TemplateValues, fill_repository, render

REPO = Path(__file__).resolve().parents[2] / "model_repository"
VALUES = TemplateValues(engine_dir="/engines/x", max_batch_size=4)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    fill_repository(REPO, VALUES, out)
    return {spec.name: text_format.Parse((out / spec.name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
            for spec in ALL_MODELS}


def _as_tuples(tensors):
    return {(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims), getattr(t, "optional", False)) for t in tensors}


@pytest.mark.parametrize("spec", ALL_MODELS, ids=lambda s: s.name)
def test_config_matches_schema(configs, spec):
    config = configs[spec.name]
    assert config.name == spec.name
    assert config.max_batch_size == 4
    expected_inputs = {(t.name, f"TYPE_{t.dtype}", t.dims, t.optional) for t in spec.inputs}
    assert _as_tuples(config.input) == expected_inputs
    outputs = {(n, d, dims) for n, d, dims, _ in _as_tuples(config.output)}
    assert outputs == {(t.name, f"TYPE_{t.dtype}", t.dims) for t in spec.outputs}
    if spec.name != "ensemble":
        assert config.model_transaction_policy.decoupled == spec.decoupled


def test_ensemble_wiring_covers_every_input_and_output(configs):
    steps = {step.model_name: step for step in configs["ensemble"].ensemble_scheduling.step}
    fed = {v for step in steps.values() for v in step.input_map.values()}
    assert {t.name for t in ENSEMBLE.inputs} <= fed
    produced = {v for step in steps.values() for v in step.output_map.values()}
    assert {t.name for t in ENSEMBLE.outputs} <= produced
    llm = steps["tensorrt_llm"].input_map
    for knob, wire in TRTLLM_SAMPLING_NAMES.items():
        # min_tokens and seed (and their old names) are resolved by preprocessing.
        assert llm[wire] == (f"_{knob}" if knob in ALIASES.values() else knob)
    assert set(llm) <= {t.name for t in TENSORRT_LLM.inputs}
    # Every preprocessing output reaches tensorrt_llm; every tensorrt_llm output but request_key's reaches
    # postprocessing under the same name.
    assert {f"_{t.name}" for t in PREPROCESSING.outputs} <= set(llm.values())
    post = steps["postprocessing"].input_map
    assert {v for v in post.values()} == {f"_{t.name}" for t in TENSORRT_LLM.outputs}


def test_every_input_of_nvidias_ensemble_is_declared_with_its_type(configs):
    """tensorrtllm_backend v0.13 to v0.19's ensemble inputs (read from its all_models/ configs)."""
    declared = {(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in configs["ensemble"].input}
    assert NVIDIA_ENSEMBLE_INPUTS <= declared, NVIDIA_ENSEMBLE_INPUTS - declared
    outputs = {(t.name, model_config_pb2.DataType.Name(t.data_type)) for t in configs["ensemble"].output}
    assert {(n, d) for n, d, _ in NVIDIA_ENSEMBLE_OUTPUTS} <= outputs


_S, _I, _F, _B, _U = "TYPE_STRING", "TYPE_INT32", "TYPE_FP32", "TYPE_BOOL", "TYPE_UINT64"
NVIDIA_ENSEMBLE_INPUTS = {
    ("text_input", _S, (1,)), ("decoder_text_input", _S, (1,)), ("max_tokens", _I, (1,)),
    ("num_return_sequences", _I, (1,)), ("bad_words", _S, (-1,)), ("stop_words", _S, (-1,)),
    ("exclude_input_in_output", _B, (1,)), ("end_id", _I, (1,)), ("pad_id", _I, (1,)), ("top_k", _I, (1,)),
    ("top_p", _F, (1,)), ("temperature", _F, (1,)), ("length_penalty", _F, (1,)),
    ("repetition_penalty", _F, (1,)), ("min_length", _I, (1,)), ("presence_penalty", _F, (1,)),
    ("frequency_penalty", _F, (1,)), ("random_seed", _U, (1,)), ("return_log_probs", _B, (1,)),
    ("return_context_logits", _B, (1,)), ("return_generation_logits", _B, (1,)),
    ("return_kv_cache_reuse_stats", _B, (1,)), ("return_perf_metrics", _B, (1,)), ("beam_width", _I, (1,)),
    ("stream", _B, (1,)), ("prompt_embedding_table", "TYPE_FP16", (-1, -1)), ("prompt_table_extra_id", _U, (1,)),
    ("prompt_vocab_size", _I, (1,)), ("embedding_bias_words", _S, (-1,)), ("embedding_bias_weights", _F, (-1,)),
    ("lora_task_id", _U, (1,)), ("lora_weights", "TYPE_FP16", (-1, -1)), ("lora_config", _I, (-1, 3)),
    ("guided_decoding_guide_type", _S, (1,)), ("guided_decoding_guide", _S, (1,)),
}
NVIDIA_ENSEMBLE_OUTPUTS = {
    ("text_output", _S, (-1,)), ("cum_log_probs", _F, (-1,)), ("output_log_probs", _F, (-1, -1)),
    ("context_logits", _F, (-1, -1)), ("generation_logits", _F, (-1, -1, -1)), ("batch_index", _I, (1,)),
    ("sequence_index", _I, (1,)), ("kv_cache_alloc_new_blocks", _I, (1,)), ("kv_cache_reused_blocks", _I, (1,)),
    ("kv_cache_alloc_total_blocks", _I, (1,)), ("arrival_time_ns", "TYPE_INT64", (1,)),
    ("first_scheduled_time_ns", "TYPE_INT64", (1,)), ("first_token_time_ns", "TYPE_INT64", (1,)),
    ("last_token_time_ns", "TYPE_INT64", (1,)), ("acceptance_rate", _F, (1,)),
    ("total_accepted_draft_tokens", _I, (1,)), ("total_draft_tokens", _I, (1,)),
}


def test_unfilled_placeholder_fails_loudly():
    with pytest.raises(ConfigError, match="engine_dir"):
        render('string_value: "${engine_dir}"', {}, "x")
    config = {"name": "tensorrt_llm", "parameters": {"engine_dir": {"string_value": "${engine_dir}"}}}
    with pytest.raises(ConfigError, match="unfilled"):
        parse_parameters(config)


def test_llm_params_reject_unknown_runtime():
    config = {"parameters": {"runtime": {"string_value": "onnx"}, "engine_dir": {"string_value": "/e"}}}
    with pytest.raises(ConfigError, match="runtime"):
        LLMModelParams.from_config(config)
    with pytest.raises(ConfigError):
        TemplateValues(engine_dir="/e", max_batch_size=0)


def test_trtllm_runtime_refuses_a_device_or_dtype_override():
    assert LLMModelParams(runtime="tensorrt_llm", engine_dir="/e").runtime == "tensorrt_llm"
    with pytest.raises(ConfigError, match="fixed when a TensorRT-LLM engine is built"):
        LLMModelParams(runtime="tensorrt_llm", engine_dir="/e", device="cuda")


def _llm_config(**values):
    return {"parameters": {key: {"string_value": value}
                           for key, value in {"runtime": "torch", "engine_dir": "/e", **values}.items()}}


def test_cpu_threads_default_leaves_one_core_for_the_serving_path(monkeypatch):
    params = LLMModelParams.from_config(_llm_config(cpu_threads=""))
    assert params.cpu_threads == 0
    for cores, expected in ((set(range(8)), 7), ({0, 1}, 1), ({0}, 1)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, cores=cores: cores)
        assert params.torch_cpu_threads() == expected
    assert LLMModelParams.from_config(_llm_config(cpu_threads="3")).torch_cpu_threads() == 3


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_cpu_threads_must_be_a_count(value):
    with pytest.raises(ConfigError, match="cpu_threads"):
        LLMModelParams.from_config(_llm_config(cpu_threads=value))
    with pytest.raises(ConfigError, match="cpu_threads"):
        TemplateValues(engine_dir="/e", max_batch_size=1, cpu_threads=-1)


def test_the_torch_runtime_on_cpu_uses_the_configured_threads(tiny_engine):
    import torch

    from qwen_triton.config import load_engine_folder
    from qwen_triton.serving.runtime_choice import start_engine

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    engine = start_engine(LLMModelParams(runtime="torch", engine_dir=str(tiny_engine), device="cpu", cpu_threads=1),
                          load_engine_folder(tiny_engine), on_stats=None)
    try:
        assert torch.get_num_threads() == 1
    finally:
        engine.shutdown()
        torch.set_num_threads(before)


def test_tensorrt_llm_bls_has_the_ensembles_io_and_wires_tensorrt_llm_as_the_ensemble_does(configs):
    from qwen_triton.schema import TENSORRT_LLM_BLS
    from qwen_triton.serving.bls import DIRECT, PREPROCESSED

    bls = configs["tensorrt_llm_bls"]
    assert (_as_tuples(bls.input), _as_tuples(bls.output)) == (_as_tuples(configs["ensemble"].input),
                                                              _as_tuples(configs["ensemble"].output))
    assert bls.backend == "python" and bls.model_transaction_policy.decoupled and TENSORRT_LLM_BLS.decoupled
    # A BLS request streams for as long as it generates: a dynamic batcher would only queue it.
    assert not bls.HasField("dynamic_batching") and bls.instance_group[0].count == VALUES.bls_instance_count
    assert {p: v.string_value for p, v in bls.parameters.items()} == {"engine_dir": VALUES.engine_dir}
    steps = {step.model_name: step for step in configs["ensemble"].ensemble_scheduling.step}
    wired = steps["tensorrt_llm"].input_map  # tensorrt_llm input <- ensemble tensor ("_x": preprocessing's x)
    assert PREPROCESSED == {source[1:]: name for name, source in wired.items() if source.startswith("_")}
    assert DIRECT == {source: name for name, source in wired.items() if not source.startswith("_")}
    # Every client input reaches preprocessing or tensorrt_llm.
    assert {t.name for t in TENSORRT_LLM_BLS.inputs} <= {t.name for t in PREPROCESSING.inputs} | set(DIRECT)
    with pytest.raises(ConfigError):
        TemplateValues(engine_dir="/e", max_batch_size=1, bls_instance_count=0)
