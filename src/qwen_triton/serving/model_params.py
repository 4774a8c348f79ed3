"""Reads a Triton model's `parameters` (wiring only: paths, names) from the config the backend hands over.

The one place config.pbtxt values are parsed: an unfilled `${...}` placeholder fails loudly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import ConfigError

RUNTIMES = ("torch", "tensorrt_llm")


def parse_parameters(model_config: dict | str) -> dict[str, str]:
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    unfilled = sorted(key for key, value in params.items() if "${" in value)
    if unfilled:
        raise ConfigError(
            f"model {config.get('name', '?')!r}: unfilled template parameters {unfilled}; "
            "run `python -m build.fill_templates` (or `make serve`) first")
    return params


def is_decoupled(model_config: dict | str) -> bool:
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    return bool(config.get("model_transaction_policy", {}).get("decoupled", False))


def _required(params: dict[str, str], key: str) -> str:
    value = params.get(key, "")
    if not value:
        raise ConfigError(f"config.pbtxt parameter {key!r} is missing or empty")
    return value


@dataclass(frozen=True)
class TextModelParams:
    """preprocessing / postprocessing: where the engine (tokenizer, limits, defaults) lives."""

    engine_dir: str

    @classmethod
    def from_config(cls, model_config: dict | str) -> "TextModelParams":
        return cls(engine_dir=_required(parse_parameters(model_config), "engine_dir"))


@dataclass(frozen=True)
class LLMModelParams:
    runtime: str
    engine_dir: str
    device: str = ""  # "" -> the runtime picks (cuda when available)
    dtype: str = ""  # "" -> the engine's dtype (float16 on CUDA for a float32 engine)
    cpu_threads: int = 0  # torch threads when the torch runtime runs on the CPU; 0 -> default_cpu_threads()
    decoupled: bool = True  # the config's model_transaction_policy: False allows one response per request

    def __post_init__(self):
        if self.cpu_threads < 0:
            raise ConfigError(f"parameter cpu_threads must be >= 0 (0: automatic), got {self.cpu_threads}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"parameter runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime == "tensorrt_llm" and (self.device or self.dtype):
            raise ConfigError("parameters device and dtype are fixed when a TensorRT-LLM engine is built; "
                              "leave them empty for runtime tensorrt_llm")

    @classmethod
    def from_config(cls, model_config: dict | str) -> "LLMModelParams":
        params = parse_parameters(model_config)
        return cls(runtime=_required(params, "runtime"), engine_dir=_required(params, "engine_dir"),
                   device=params.get("device", ""), dtype=params.get("dtype", ""),
                   cpu_threads=_count(params, "cpu_threads"), decoupled=is_decoupled(model_config))

    def torch_cpu_threads(self) -> int:
        return self.cpu_threads or default_cpu_threads()


def _count(params: dict[str, str], key: str) -> int:
    value = params.get(key, "").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"config.pbtxt parameter {key!r} must be an integer, got {value!r}") from None


def default_cpu_threads() -> int:
    """The cores this process may use, less one: the engine's step would otherwise compete with Triton, the
    pre- and postprocessing stubs and the response sends for the last core (2-core CPU machine, eight
    streams, same session: 243 tok/s with one thread, 185 with two; one stream about equal)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)
