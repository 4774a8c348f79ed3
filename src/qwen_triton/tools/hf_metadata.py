"""What an engine folder needs besides weights, read from a Hugging Face Qwen checkpoint: the typed
ModelConfig (v1 Qwen-7B-Chat or Qwen1.5/2/2.5), the chat window, generation defaults and the vocab.
Shared by our converter and the TensorRT-LLM build; torch-free."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import (ENGINE_CONFIG_FILE, GENERATION_CONFIG_FILE, EngineConfig, EngineLimits, ModelConfig,
                      QuantConfig)
from ..errors import ConfigError
from ..text.tokenizer import TOKENIZER_FILE, packaged_vocab


def read_hf_config(hf_dir: str | Path) -> dict:
    config = Path(hf_dir) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{config} not found: not a Hugging Face checkpoint folder")
    return json.loads(config.read_text())


def _v1_model_config(hf: dict, max_seq_len: int) -> ModelConfig:
    heads, hidden = hf["num_attention_heads"], hf["hidden_size"]
    if hf.get("rotary_pct", 1.0) != 1.0:
        raise ConfigError("v1 checkpoints with rotary_pct != 1 are not supported")
    if hf.get("kv_channels", hidden // heads) * heads != hidden or hf["intermediate_size"] % 2:
        raise ConfigError("v1 config: need kv_channels * heads == hidden_size and an even intermediate_size")
    # Within seq_length, dynamic NTK (alpha = 1) and logn scaling (factor 1) are identities: v1 is then
    # arithmetically Qwen2 without GQA. Beyond it they are not implemented.
    if max_seq_len > hf["seq_length"]:
        raise ConfigError(f"max_seq_len {max_seq_len} exceeds the checkpoint's seq_length {hf['seq_length']}: "
                          "dynamic NTK and logn attention are not implemented")
    return ModelConfig(vocab_size=hf["vocab_size"], hidden_size=hidden, intermediate_size=hf["intermediate_size"] // 2,
                       num_hidden_layers=hf["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=heads,
                       rms_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
                       rope_theta=float(hf.get("rotary_emb_base", 10000)),
                       max_position_embeddings=hf["seq_length"], tie_word_embeddings=False)


def _qwen2_model_config(hf: dict, max_seq_len: int) -> ModelConfig:
    rope = hf.get("rope_parameters") or {}  # transformers 5 moves rope_theta / rope_scaling here
    scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling:
        raise ConfigError(f"rope scaling {scaling} is not implemented")
    if hf.get("use_sliding_window") and max_seq_len > hf.get("sliding_window", 0):
        raise ConfigError("sliding-window attention is not implemented; lower max_seq_len below sliding_window")
    if max_seq_len > hf["max_position_embeddings"]:
        raise ConfigError(f"max_seq_len {max_seq_len} exceeds max_position_embeddings {hf['max_position_embeddings']}")
    return ModelConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                       intermediate_size=hf["intermediate_size"], num_hidden_layers=hf["num_hidden_layers"],
                       num_attention_heads=hf["num_attention_heads"],
                       num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
                       rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
                       rope_theta=float(hf.get("rope_theta") or rope.get("rope_theta", 10000.0)),
                       max_position_embeddings=hf["max_position_embeddings"],
                       tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)))


def model_config_from_hf(hf: dict, max_seq_len: int) -> ModelConfig:
    kind = hf.get("model_type")
    if kind == "qwen":
        return _v1_model_config(hf, max_seq_len)
    if kind == "qwen2":
        return _qwen2_model_config(hf, max_seq_len)
    raise ConfigError(f"unsupported model_type {kind!r}: expected 'qwen' (Qwen-7B-Chat) or 'qwen2' (Qwen1.5/2/2.5)")


def chat_window(hf_dir: Path) -> int:
    generation = hf_dir / GENERATION_CONFIG_FILE
    return int(json.loads(generation.read_text()).get("max_window_size", 6144)) if generation.is_file() else 6144


def write_engine_metadata(hf_dir: str | Path, out: str | Path, model: ModelConfig, limits: EngineLimits,
                          quantization: QuantConfig = QuantConfig()) -> None:
    """engine_config.json, generation_config.json (when the checkpoint has one) and qwen.tiktoken into out."""
    hf_dir, out = Path(hf_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = EngineConfig(model=model, limits=limits, max_window_size=chat_window(hf_dir), quantization=quantization)
    (out / ENGINE_CONFIG_FILE).write_text(config.to_json())
    if (hf_dir / GENERATION_CONFIG_FILE).is_file():
        shutil.copy2(hf_dir / GENERATION_CONFIG_FILE, out / GENERATION_CONFIG_FILE)
    vocab = hf_dir / TOKENIZER_FILE  # Qwen1.5/2 ship tokenizer.json instead; the BPE ranks are the same
    shutil.copy2(vocab if vocab.is_file() else packaged_vocab(), out / TOKENIZER_FILE)
