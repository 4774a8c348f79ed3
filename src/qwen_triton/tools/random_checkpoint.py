"""Deterministic random-weight Qwen checkpoints in Hugging Face layout (v1 Qwen-7B-Chat or Qwen2), full 151,936
vocabulary: the stand-in for real weights, which cannot be downloaded here. It knows the HF names and configs of
both layouts and must not know the engine's names (build/convert maps those)."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..text.tokenizer import TOKENIZER_FILE, packaged_vocab
from ..vocab import PADDED_VOCAB_SIZE

FLAVOURS = ("qwen", "qwen2")  # qwen = Qwen-7B-Chat (v1) layout


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    mlp: int  # MLP width (Qwen2 intermediate_size; v1 writes 2 * mlp)
    kv_heads: int | None = None  # qwen2 only (None: no GQA); v1 never has GQA
    tie_word_embeddings: bool = False  # qwen2 only; v1 is always untied


TINY = Size(hidden=64, layers=2, heads=4, mlp=128, kv_heads=2, tie_word_embeddings=True)
QWEN_7B = Size(hidden=4096, layers=32, heads=32, mlp=11008)  # GPU benchmark shape; never built in tests
SIZES = {"tiny": TINY, "qwen7b": QWEN_7B}

V1_GENERATION = {"chat_format": "chatml", "eos_token_id": 151643, "pad_token_id": 151643, "max_window_size": 6144,
                 "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.8, "repetition_penalty": 1.1}
QWEN2_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
                    "max_new_tokens": 512}


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be 'qwen' (v1) or 'qwen2', got {flavour!r}")


def qwen2_config(size: Size, flavour: str) -> dict:
    """HF Qwen2 config.json; for flavour "qwen", the Qwen2 model arithmetically equal to the v1 checkpoint
    (no GQA, untied, rope_theta = rotary_emb_base, rms_norm_eps = layer_norm_epsilon)."""
    _check_flavour(flavour)
    v1 = flavour == "qwen"
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": size.hidden,
            "intermediate_size": size.mlp, "num_hidden_layers": size.layers, "num_attention_heads": size.heads,
            "num_key_value_heads": size.heads if v1 else (size.kv_heads or size.heads), "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0 if v1 else 1000000.0, "max_position_embeddings": 8192 if v1 else 32768,
            "tie_word_embeddings": False if v1 else size.tie_word_embeddings, "vocab_size": PADDED_VOCAB_SIZE,
            "torch_dtype": "float32", "hidden_act": "silu", "use_sliding_window": False}


def v1_config(size: Size) -> dict:
    """Qwen-7B-Chat's config.json keys (remote-code QWenLMHeadModel)."""
    return {"model_type": "qwen", "architectures": ["QWenLMHeadModel"], "hidden_size": size.hidden,
            "intermediate_size": 2 * size.mlp, "num_attention_heads": size.heads, "num_hidden_layers": size.layers,
            "layer_norm_epsilon": 1e-6, "rotary_emb_base": 10000, "rotary_pct": 1.0, "seq_length": 8192,
            "kv_channels": size.hidden // size.heads, "vocab_size": PADDED_VOCAB_SIZE, "no_bias": True,
            "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True,
            "max_position_embeddings": 8192}


def qwen2_state_dict(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Qwen2-named float32 weights drawn in a fixed order from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    h, mlp, heads, kv = (config[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                             "num_key_value_heads"))
    kv_size = kv * (h // heads)

    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std

    def norm():  # ~1 + small noise, so a wrong norm weight shows in the logits
        return 1 + normal(h, std=0.1)

    state = {"model.embed_tokens.weight": normal(PADDED_VOCAB_SIZE, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state |= {p + "input_layernorm.weight": norm(),
                  p + "self_attn.q_proj.weight": normal(h, h), p + "self_attn.q_proj.bias": normal(h),
                  p + "self_attn.k_proj.weight": normal(kv_size, h), p + "self_attn.k_proj.bias": normal(kv_size),
                  p + "self_attn.v_proj.weight": normal(kv_size, h), p + "self_attn.v_proj.bias": normal(kv_size),
                  p + "self_attn.o_proj.weight": normal(h, h),
                  p + "post_attention_layernorm.weight": norm(),
                  p + "mlp.gate_proj.weight": normal(mlp, h), p + "mlp.up_proj.weight": normal(mlp, h),
                  p + "mlp.down_proj.weight": normal(h, mlp)}
    state["model.norm.weight"] = norm()
    if not config["tie_word_embeddings"]:
        state["lm_head.weight"] = normal(PADDED_VOCAB_SIZE, h)
    return state


def reference_checkpoint(flavour: str, seed: int = 0, size: Size = TINY) -> tuple[dict[str, torch.Tensor], dict]:
    """(Qwen2-named state dict, Qwen2 config.json dict) holding the numbers make_random_checkpoint writes:
    what transformers' Qwen2ForCausalLM loads as the reference, also for a v1 checkpoint."""
    config = qwen2_config(size, flavour)
    return qwen2_state_dict(config, seed), config


def to_v1_names(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Qwen2 names -> Qwen-7B-Chat names: c_attn = [q; k; v], w2 = SiLU gate, w1 = up, c_proj = down."""
    out = {"transformer.wte.weight": state["model.embed_tokens.weight"],
           "transformer.ln_f.weight": state["model.norm.weight"], "lm_head.weight": state["lm_head.weight"]}
    for i in range(num_layers):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        attn = [state[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]
        bias = [state[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]
        out |= {q + "ln_1.weight": state[p + "input_layernorm.weight"],
                q + "attn.c_attn.weight": torch.cat(attn), q + "attn.c_attn.bias": torch.cat(bias),
                q + "attn.c_proj.weight": state[p + "self_attn.o_proj.weight"],
                q + "ln_2.weight": state[p + "post_attention_layernorm.weight"],
                q + "mlp.w1.weight": state[p + "mlp.up_proj.weight"],
                q + "mlp.w2.weight": state[p + "mlp.gate_proj.weight"],
                q + "mlp.c_proj.weight": state[p + "mlp.down_proj.weight"]}
    return out


def make_random_checkpoint(out_dir: str | Path, flavour: str, seed: int = 0, size: Size = TINY) -> Path:
    """Writes config.json, generation_config.json, model.safetensors and qwen.tiktoken into out_dir."""
    state, reference = reference_checkpoint(flavour, seed, size)
    if flavour == "qwen":
        config, state, generation = v1_config(size), to_v1_names(state, size.layers), V1_GENERATION
    else:
        config, generation = reference, QWEN2_GENERATION
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    shutil.copy2(packaged_vocab(), out / TOKENIZER_FILE)
    return out
