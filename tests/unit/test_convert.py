"""build/'s converter: v1 names and fusing (w2 = gate, w1 = up), Qwen2 QKV order, tied heads, limits."""
import json

import pytest
import torch
from safetensors.torch import load_file

from qwen_triton.config import EngineLimits, load_engine_folder
from qwen_triton.errors import ConfigError
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

LIMITS = EngineLimits(max_batch_size=2, max_input_len=64, max_seq_len=128)


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1")
    make_random_checkpoint(root / "hf", "qwen", seed=1)
    convert_checkpoint(root / "hf", root / "engine", LIMITS)
    return load_file(root / "hf" / "model.safetensors"), load_file(root / "engine" / "model.safetensors"), root


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    root = tmp_path_factory.mktemp("q2")
    make_random_checkpoint(root / "hf", "qwen2", seed=1)
    convert_checkpoint(root / "hf", root / "engine", LIMITS)
    return load_file(root / "hf" / "model.safetensors"), load_file(root / "engine" / "model.safetensors"), root


def test_v1_gate_is_w2_and_up_is_w1(v1):
    hf, engine, _ = v1
    gate, up = engine["model.layers.1.mlp.gate_up_proj.weight"].chunk(2)
    assert torch.equal(gate, hf["transformer.h.1.mlp.w2.weight"]) and torch.equal(up, hf["transformer.h.1.mlp.w1.weight"])
    assert torch.equal(engine["model.layers.0.self_attn.qkv_proj.bias"], hf["transformer.h.0.attn.c_attn.bias"])
    assert torch.equal(engine["lm_head.weight"], hf["lm_head.weight"])


def test_v1_engine_config(v1):
    *_, root = v1
    folder = load_engine_folder(root / "engine")
    hf = json.loads((root / "hf" / "config.json").read_text())
    assert folder.config.model.intermediate_size == hf["intermediate_size"] // 2
    assert folder.config.model.num_key_value_heads == hf["num_attention_heads"]
    assert folder.generation.top_p == 0.8 and folder.generation.repetition_penalty == 1.1
    assert folder.tokenizer_file.is_file()


def test_qwen2_qkv_fused_in_order_and_tied_head_dropped(qwen2):
    hf, engine, root = qwen2
    p = "model.layers.0.self_attn."
    expected = torch.cat([hf[p + "q_proj.weight"], hf[p + "k_proj.weight"], hf[p + "v_proj.weight"]])
    assert torch.equal(engine[p + "qkv_proj.weight"], expected)
    assert "lm_head.weight" not in engine and load_engine_folder(root / "engine").config.model.tie_word_embeddings


def test_v1_refuses_a_sequence_longer_than_seq_length(v1, tmp_path):
    *_, root = v1
    with pytest.raises(ConfigError, match="seq_length"):
        convert_checkpoint(root / "hf", tmp_path, EngineLimits(max_input_len=8000, max_seq_len=9000,
                                                               max_num_batched_tokens=8192))


def test_unknown_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="llama"):
        convert_checkpoint(tmp_path, tmp_path / "e", LIMITS)
