"""HF Qwen checkpoint (v1 Qwen-7B-Chat or Qwen1.5/2/2.5) -> engine folder. Renaming and QKV / gate-up
fusing happen here, once; the runtime loads the result without renaming."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import (ENGINE_CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_FILE, EngineConfig, EngineLimits,
                      ModelConfig, load_engine_folder)
from ..errors import ConfigError
from ..runtime.loader import TORCH_DTYPES
from ..text.tokenizer import TOKENIZER_FILE, packaged_vocab

V1_RENAMES = [  # v1 name pattern -> engine name (w1/w2 handled by fusing)
    (r"transformer\.wte\.weight", "model.embed_tokens.weight"),
    (r"transformer\.ln_f\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"transformer\.h\.(\d+)\.ln_1\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"transformer\.h\.(\d+)\.ln_2\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"model.layers.\1.self_attn.qkv_proj.\2"),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]


def model_config_from_hf(hf: dict, max_seq_len: int) -> ModelConfig:
    kind = hf.get("model_type")
    if kind == "qwen":
        if hf.get("rotary_pct", 1.0) != 1.0:
            raise ConfigError("v1 checkpoints with rotary_pct != 1 are not supported")
        if max_seq_len > hf["seq_length"]:
            raise ConfigError(f"max_seq_len {max_seq_len} exceeds the checkpoint's seq_length {hf['seq_length']}: "
                              "dynamic NTK and logn attention are not implemented")
        return ModelConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                           intermediate_size=hf["intermediate_size"] // 2, num_hidden_layers=hf["num_hidden_layers"],
                           num_attention_heads=hf["num_attention_heads"], num_key_value_heads=hf["num_attention_heads"],
                           rms_norm_eps=hf["layer_norm_epsilon"], rope_theta=float(hf["rotary_emb_base"]),
                           max_position_embeddings=hf["seq_length"], tie_word_embeddings=False)
    if kind == "qwen2":
        return ModelConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                           intermediate_size=hf["intermediate_size"], num_hidden_layers=hf["num_hidden_layers"],
                           num_attention_heads=hf["num_attention_heads"],
                           num_key_value_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
                           rms_norm_eps=hf["rms_norm_eps"], rope_theta=float(hf.get("rope_theta", 10000.0)),
                           max_position_embeddings=hf["max_position_embeddings"],
                           tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)))
    raise ConfigError(f"unsupported model_type {kind!r}: expected 'qwen' (Qwen-7B-Chat) or 'qwen2' (Qwen1.5/2/2.5)")


def iter_hf_tensors(hf_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    files = sorted(hf_dir.glob("*.safetensors"))
    if files:
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        return
    bins = sorted(hf_dir.glob("pytorch_model*.bin"))
    if not bins:
        raise ConfigError(f"{hf_dir}: no *.safetensors or pytorch_model*.bin weights")
    for path in bins:
        yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()


def engine_tensors(hf_dir: Path, kind: str, tied: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """Engine names and tensors; parts of a fused tensor wait in `parts` until complete."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in iter_hf_tensors(hf_dir):
        target, part = _target(name, kind)
        if target is None or (tied and target == "lm_head.weight"):
            continue
        if part is None:
            yield target, tensor
            continue
        group = parts.setdefault(target, {})
        group[part] = tensor
        order = ("q", "k", "v") if "qkv" in target else ("gate", "up")
        if all(p in group for p in order):
            yield target, torch.cat([group[p] for p in order], dim=0)
            del parts[target]
    if parts:
        raise ConfigError(f"incomplete fused tensors: {sorted(parts)}")


def _target(name: str, kind: str) -> tuple[str | None, str | None]:
    if kind == "qwen":
        m = re.fullmatch(r"transformer\.h\.(\d+)\.mlp\.(w1|w2)\.weight", name)
        if m:  # v1: w2 is the SiLU gate, w1 the up branch
            return f"model.layers.{m.group(1)}.mlp.gate_up_proj.weight", "gate" if m.group(2) == "w2" else "up"
        for pattern, repl in V1_RENAMES:
            if re.fullmatch(pattern, name):
                return re.sub(pattern, repl, name), None
        return None, None
    m = re.fullmatch(r"(model\.layers\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", name)
    if m:
        return f"{m.group(1)}.self_attn.qkv_proj.{m.group(3)}", m.group(2)
    m = re.fullmatch(r"(model\.layers\.\d+)\.mlp\.(gate|up)_proj\.weight", name)
    if m:
        return f"{m.group(1)}.mlp.gate_up_proj.weight", m.group(2)
    return (name, None) if name.startswith(("model.", "lm_head.")) else (None, None)


def convert_checkpoint(hf_dir, out_dir, limits: EngineLimits, progress: Callable[[str], None] | None = None):
    hf_dir, out = Path(hf_dir), Path(out_dir)
    hf = json.loads((hf_dir / "config.json").read_text())
    model = model_config_from_hf(hf, limits.max_seq_len)
    dtype = TORCH_DTYPES[limits.dtype]
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in engine_tensors(hf_dir, hf["model_type"], model.tie_word_embeddings):
        tensors[name] = tensor.to(dtype).contiguous()
        if progress and len(tensors) % 50 == 0:
            progress(f"converted {len(tensors)} tensors")
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    generation = hf_dir / GENERATION_CONFIG_FILE
    window = json.loads(generation.read_text()).get("max_window_size", 6144) if generation.is_file() else 6144
    (out / ENGINE_CONFIG_FILE).write_text(EngineConfig(model=model, limits=limits, max_window_size=window).to_json())
    if generation.is_file():
        shutil.copy2(generation, out / GENERATION_CONFIG_FILE)
    vocab = hf_dir / TOKENIZER_FILE
    shutil.copy2(vocab if vocab.is_file() else packaged_vocab(), out / TOKENIZER_FILE)
    if progress:
        progress(f"wrote {len(tensors)} tensors ({limits.dtype}) to {out}")
    return load_engine_folder(out)
