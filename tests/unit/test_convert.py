"""build/'s converter: v1 names and fusing (w2 = gate, w1 = up), Qwen2 QKV order, tied heads, limits, shards and
.bin fallback, dtype, the strict loader (and its CPU head layout), and the thin build/ entry points."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_triton.config import EngineLimits, load_engine_folder
from qwen_triton.errors import ConfigError
from qwen_triton.runtime.loader import load_model
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

LIMITS = EngineLimits(max_batch_size=2, max_input_len=64, max_seq_len=128)
ROOT = Path(__file__).resolve().parents[2]


def _entry_point(name: str):
    # Loaded by path: `python -m build.X` runs from the repo root, pytest may not.
    spec = importlib.util.spec_from_file_location(f"build_{name}", ROOT / "build" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _convert(root, flavour):
    make_random_checkpoint(root / "hf", flavour, seed=1)
    convert_checkpoint(root / "hf", root / "engine", LIMITS)
    return load_file(root / "hf" / "model.safetensors"), load_file(root / "engine" / "model.safetensors"), root


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("v1"), "qwen")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("q2"), "qwen2")


def test_v1_gate_is_w2_and_up_is_w1(v1):
    hf, engine, _ = v1
    for i in range(2):
        gate, up = engine[f"model.layers.{i}.mlp.gate_up_proj.weight"].chunk(2)
        assert torch.equal(gate, hf[f"transformer.h.{i}.mlp.w2.weight"])
        assert torch.equal(up, hf[f"transformer.h.{i}.mlp.w1.weight"])
    assert torch.equal(engine["model.layers.0.self_attn.qkv_proj.bias"], hf["transformer.h.0.attn.c_attn.bias"])
    assert torch.equal(engine["model.layers.1.mlp.down_proj.weight"], hf["transformer.h.1.mlp.c_proj.weight"])
    assert torch.equal(engine["lm_head.weight"], hf["lm_head.weight"])
    assert torch.equal(engine["model.embed_tokens.weight"], hf["transformer.wte.weight"])


def test_v1_engine_config(v1):
    *_, root = v1
    folder = load_engine_folder(root / "engine")
    hf = json.loads((root / "hf" / "config.json").read_text())
    m = folder.config.model
    assert m.intermediate_size == hf["intermediate_size"] // 2 and m.num_key_value_heads == hf["num_attention_heads"]
    assert m.rope_theta == 10000.0 and m.rms_norm_eps == 1e-6 and not m.tie_word_embeddings
    assert folder.config.limits == LIMITS and folder.config.max_window_size == 6144
    assert folder.generation.top_p == 0.8 and folder.generation.repetition_penalty == 1.1
    assert folder.tokenizer_file.is_file()


def test_qwen2_qkv_fused_in_order_and_tied_head_dropped(qwen2):
    hf, engine, root = qwen2
    p = "model.layers.0.self_attn."
    for kind in ("weight", "bias"):
        expected = torch.cat([hf[p + f"{x}_proj.{kind}"] for x in "qkv"])
        assert torch.equal(engine[p + f"qkv_proj.{kind}"], expected)
    gate_up = torch.cat([hf["model.layers.1.mlp.gate_proj.weight"], hf["model.layers.1.mlp.up_proj.weight"]])
    assert torch.equal(engine["model.layers.1.mlp.gate_up_proj.weight"], gate_up)
    folder = load_engine_folder(root / "engine")
    assert "lm_head.weight" not in engine and folder.config.model.tie_word_embeddings
    assert folder.config.model.num_key_value_heads == 2 and folder.generation.top_k == 20


def test_engine_folder_loads_into_the_model(qwen2):
    *_, root = qwen2
    model = load_model(load_engine_folder(root / "engine"), "cpu", torch.bfloat16)
    assert model.lm_head is None and model.model.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype,hidden_major", [(torch.float32, True), (torch.bfloat16, False)])
def test_cpu_float32_head_is_stored_hidden_major_with_the_same_values(v1, dtype, hidden_major):
    _, engine, root = v1
    head = load_model(load_engine_folder(root / "engine"), "cpu", dtype).lm_head.weight
    assert head.shape == engine["lm_head.weight"].shape and torch.equal(head, engine["lm_head.weight"].to(dtype))
    assert head.t().is_contiguous() is hidden_major and head.is_contiguous() is not hidden_major


def test_loader_names_what_is_missing(qwen2, tmp_path):
    *_, root = qwen2
    shutil.copytree(root / "engine", tmp_path / "engine")
    weights = load_file(tmp_path / "engine" / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, tmp_path / "engine" / "model.safetensors")
    with pytest.raises(ConfigError, match="model.layers.1.mlp.down_proj.weight"):
        load_model(load_engine_folder(tmp_path / "engine"), "cpu", torch.float32)


def test_sharded_and_bin_checkpoints_convert_identically(qwen2, tmp_path):
    hf, engine, root = qwen2
    names = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for layout in ("sharded", "bin"):
        (tmp_path / layout).mkdir()
        shutil.copy(root / "hf" / "config.json", tmp_path / layout / "config.json")
    for file, part in shards.items():  # q / k / v of a layer land in different shards
        save_file({n: hf[n] for n in part}, tmp_path / "sharded" / file)
    weight_map = {n: f for f, part in shards.items() for n in part}
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    torch.save(hf, tmp_path / "bin" / "pytorch_model.bin")
    for layout in ("sharded", "bin"):
        convert_checkpoint(tmp_path / layout, tmp_path / f"{layout}-engine", LIMITS)
        got = load_file(tmp_path / f"{layout}-engine" / "model.safetensors")
        assert got.keys() == engine.keys() and all(torch.equal(got[n], engine[n]) for n in engine)


def test_dtype_override_and_progress(qwen2, tmp_path):
    *_, root = qwen2
    lines = []
    folder = convert_checkpoint(root / "hf", tmp_path, LIMITS, dtype="bfloat16", progress=lines.append)
    assert folder.config.limits.dtype == "bfloat16" and LIMITS.dtype == "float32"
    assert load_file(tmp_path / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
    assert lines and "engine tensors" in lines[0]


def test_v1_refuses_a_sequence_longer_than_seq_length(v1, tmp_path):
    *_, root = v1
    with pytest.raises(ConfigError, match="seq_length"):
        convert_checkpoint(root / "hf", tmp_path, EngineLimits(max_input_len=8000, max_seq_len=9000,
                                                               max_num_batched_tokens=8192))


def test_missing_fused_part_is_refused(qwen2, tmp_path):
    hf, _, root = qwen2
    shutil.copy(root / "hf" / "config.json", tmp_path / "config.json")
    kept = {n: t for n, t in hf.items() if n != "model.layers.0.self_attn.k_proj.bias"}
    save_file(kept, tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match="qkv_proj.bias"):
        convert_checkpoint(tmp_path, tmp_path / "e", LIMITS)


def test_unknown_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="llama"):
        convert_checkpoint(tmp_path, tmp_path / "e", LIMITS)


def test_build_entry_points(tmp_path, capsys):
    _entry_point("make_random_checkpoint").main(["--flavour", "qwen", "--seed", "2", "--out", str(tmp_path / "hf")])
    _entry_point("convert").main(["--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "engine"),
                                  "--dtype", "float16", "--max-batch-size", "3", "--max-input-len", "32",
                                  "--max-seq-len", "64", "--block-size", "8", "--enable-kv-cache-reuse"])
    limits = load_engine_folder(tmp_path / "engine").config.limits
    assert (limits.dtype, limits.max_batch_size, limits.max_seq_len, limits.block_size) == ("float16", 3, 64, 8)
    assert limits.enable_kv_cache_reuse and not EngineLimits().enable_kv_cache_reuse  # off unless asked
    assert "wrote engine folder" in capsys.readouterr().out
