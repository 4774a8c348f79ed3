"""Typed, validated, read-only configuration: model architecture, engine limits, generation defaults.

An engine folder holds `engine_config.json` (ModelConfig + EngineLimits [+ QuantConfig], written by build/)
and optionally `generation_config.json` (the checkpoint's defaults). Nothing here is mutated
after construction; values derived at start-up (KV block counts) are returned, not stored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import ConfigError

ENGINE_CONFIG_FILE = "engine_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "qwen.tiktoken"
RANDOM_WEIGHTS_FILE = "random_weights.json"  # benchmark engines: weights made on the device from a seed

DTYPES = ("float32", "bfloat16", "float16")
WEIGHT_ONLY_PRECISIONS = ("int8", "int4")
# TensorRT-LLM's QuantAlgo name for e4m3 weights scaled per output channel and activations per token, dynamically
# (the torch runtime's fp8), and for its ModelOpt fp8 with per-tensor scales from calibration (its build path's).
FP8_ALGO = "FP8_PER_CHANNEL_PER_TOKEN"
FP8_PER_TENSOR_ALGO = "FP8"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Qwen2-style architecture; v1 checkpoints are converted into it by build/."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int  # MLP width (v1 config's intermediate_size / 2)
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False

    def __post_init__(self):
        _require(self.hidden_size % self.num_attention_heads == 0, "hidden_size must divide by num_attention_heads")
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "heads must divide by kv heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class EngineLimits:
    dtype: str = "float32"  # default compute dtype; the runtime may override per device
    max_batch_size: int = 8  # concurrent sequences in the running batch
    max_input_len: int = 1024  # prompt tokens accepted
    max_seq_len: int = 2048  # prompt + output tokens
    max_num_batched_tokens: int = 4096  # prefill tokens per engine step
    block_size: int = 16  # tokens per KV block
    # Longest prompt that joins a running decode step instead of stalling it for a prefill step of its own
    # (CUDA graphs with the paged kernel only); 0: never.
    mixed_prefill_tokens: int = 512
    # Mix only while at most this many prompts wait (0: any number). A longer queue gets one prefill step for
    # all of it, so a burst of arrivals waits one step instead of one mixed step per prompt.
    mixed_max_waiting: int = 0
    # Share of the GPU memory free once the weights are loaded that the paged KV cache takes (TensorRT-LLM's
    # name); the rest is for activations and CUDA graphs. The cache never exceeds max_batch_size x max_seq_len.
    kv_cache_free_gpu_mem_fraction: float = 0.85
    # A request's stop_words and bad_words: at most this many words each, each at most max_word_tokens ids
    # (the bad words are indexed once per request, so their cost per token depends on neither).
    max_words_per_list: int = 256
    max_word_tokens: int = 32
    # The serving watchdog fails every open request and restarts the model when no engine step has finished
    # for this long while work waits (a step, even a long prompt's prefill, takes far less).
    stall_timeout_s: float = 120.0
    # Prefix caching (TensorRT-LLM's word): a finished request's full KV blocks stay in the free pool, found by
    # their tokens, and a later prompt starting with the same tokens reuses them instead of computing them.
    # Off by default: reused K/V may differ from recomputed K/V in the last bits (runtime/block_manager.py).
    enable_kv_cache_reuse: bool = False

    def __post_init__(self):
        _require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        _require(0 < self.max_input_len < self.max_seq_len, "need 0 < max_input_len < max_seq_len")
        _require(self.max_num_batched_tokens >= self.max_input_len, "max_num_batched_tokens < max_input_len")
        _require(self.max_batch_size > 0 and self.block_size > 0, "max_batch_size and block_size must be > 0")
        _require(self.mixed_prefill_tokens >= 0, "mixed_prefill_tokens must be >= 0")
        _require(self.mixed_max_waiting >= 0, "mixed_max_waiting must be >= 0")
        _require(self.stall_timeout_s > 0, "stall_timeout_s must be > 0")
        _require(self.max_words_per_list > 0 and self.max_word_tokens > 0,
                 "max_words_per_list and max_word_tokens must be > 0")
        _require(0 < self.kv_cache_free_gpu_mem_fraction <= 1,
                 f"kv_cache_free_gpu_mem_fraction must be in (0, 1], got {self.kv_cache_free_gpu_mem_fraction}")


@dataclass(frozen=True)
class QuantConfig:
    """Quantization of the decoder's linear layers, weight-only or fp8 weights and activations (TensorRT-LLM's
    words; the stored layout is in models/quant_linear.py and docs/quantization.md). Engines without it are
    unquantized."""

    weight_only_precision: str | None = None  # "int8" (per output channel) | "int4" (per group) | None
    # int4 only: input columns sharing one scale and zero point; None: per output channel, as TensorRT-LLM's own
    # weight-only int4 (its engines record it so; the torch runtime's layout is grouped)
    group_size: int | None = None
    quantize_head: bool = False  # lm_head too (the embedding never)
    quant_algo: str | None = None  # FP8_ALGO or FP8_PER_TENSOR_ALGO: W8A8 in e4m3 (weight_only_precision null)

    @property
    def precision(self) -> str | None:
        """The stored layout: "int8", "int4", "fp8" or None (16-bit)."""
        return "fp8" if self.quant_algo is not None else self.weight_only_precision

    def __post_init__(self):
        _require(self.quant_algo in (None, FP8_ALGO, FP8_PER_TENSOR_ALGO),
                 f"quant_algo must be {FP8_ALGO!r}, {FP8_PER_TENSOR_ALGO!r} or null, got {self.quant_algo!r}")
        _require(self.quant_algo is None or self.weight_only_precision is None,
                 f"quant_algo {self.quant_algo} quantizes activations too: weight_only_precision must be null")
        precision = self.weight_only_precision
        _require(precision in (None, *WEIGHT_ONLY_PRECISIONS),
                 f"weight_only_precision must be one of {WEIGHT_ONLY_PRECISIONS} or null, got {precision!r}")
        if precision == "int4":
            _require(self.group_size is None or (isinstance(self.group_size, int) and self.group_size > 0
                                                 and self.group_size % 2 == 0),
                     f"int4 needs an even group_size > 0 (or none: per channel), got {self.group_size!r}")
        else:
            _require(self.group_size is None, f"group_size is for int4 only, got {self.group_size} with {precision}")
        _require(self.precision is not None or not self.quantize_head,
                 "quantize_head needs a weight_only_precision or quant_algo")


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling defaults when a request leaves a knob out (greedy unless the checkpoint says otherwise)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    @classmethod
    def from_hf(cls, data: dict) -> "GenerationDefaults":
        # HF semantics: do_sample false means greedy whatever temperature says.
        if not data.get("do_sample", False):
            return cls(max_new_tokens=int(data.get("max_new_tokens", cls.max_new_tokens)))
        return cls(
            max_new_tokens=int(data.get("max_new_tokens", cls.max_new_tokens)),
            temperature=float(data.get("temperature", 1.0)),
            top_k=int(data.get("top_k", 0) or 0),
            top_p=float(data.get("top_p", 1.0)),
            repetition_penalty=float(data.get("repetition_penalty", 1.0)),
        )


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig
    limits: EngineLimits = field(default_factory=EngineLimits)
    max_window_size: int = 6144  # chat-history window in tokens (Qwen-7B-Chat generation_config)
    quantization: QuantConfig = field(default_factory=QuantConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineConfig":
        return cls(
            model=_build(ModelConfig, data["model"]),
            limits=_build(EngineLimits, data.get("limits", {})),
            max_window_size=int(data.get("max_window_size", 6144)),
            quantization=_build(QuantConfig, data.get("quantization") or {}),  # absent in older engine folders
        )


def _build(kind, data: dict):
    known = {f.name for f in fields(kind)}
    unknown = set(data) - known
    _require(not unknown, f"{kind.__name__}: unknown keys {sorted(unknown)}")
    return kind(**data)


@dataclass(frozen=True)
class EngineFolder:
    """An engine folder as build/ writes it."""

    path: Path
    config: EngineConfig
    generation: GenerationDefaults

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def random_weights_seed(self) -> int | None:
        marker = self.path / RANDOM_WEIGHTS_FILE
        return json.loads(marker.read_text())["seed"] if marker.is_file() else None

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE


def load_engine_folder(path: str | Path) -> EngineFolder:
    path = Path(path)
    config_file = path / ENGINE_CONFIG_FILE
    _require(config_file.is_file(), f"{config_file} not found: build an engine first (python -m build.convert)")
    config = EngineConfig.from_dict(json.loads(config_file.read_text()))
    gen_file = path / GENERATION_CONFIG_FILE
    generation = GenerationDefaults.from_hf(json.loads(gen_file.read_text())) if gen_file.is_file() else GenerationDefaults()
    return EngineFolder(path, config, generation)
