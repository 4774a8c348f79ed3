"""Reads a Triton model's `parameters` (wiring only: paths, names) from the config the backend hands over.

The one place config.pbtxt values are parsed: an unfilled `${...}` placeholder fails loudly.
"""
from __future__ import annotations

import json
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

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"parameter runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime == "tensorrt_llm" and (self.device or self.dtype):
            raise ConfigError("parameters device and dtype are fixed when a TensorRT-LLM engine is built; "
                              "leave them empty for runtime tensorrt_llm")

    @classmethod
    def from_config(cls, model_config: dict | str) -> "LLMModelParams":
        params = parse_parameters(model_config)
        return cls(runtime=_required(params, "runtime"), engine_dir=_required(params, "engine_dir"),
                   device=params.get("device", ""), dtype=params.get("dtype", ""))
