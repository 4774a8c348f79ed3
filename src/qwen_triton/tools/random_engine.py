"""An engine folder whose weights the runtime makes on the device from a seed (benchmarks only): the
config, tokenizer and a seed marker travel; 15 GB of Qwen-7B-shape weights do not."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import (ENGINE_CONFIG_FILE, RANDOM_WEIGHTS_FILE, EngineConfig, EngineLimits, QuantConfig,
                      load_engine_folder)
from ..text.tokenizer import TOKENIZER_FILE, packaged_vocab
from .hf_metadata import model_config_from_hf
from .random_checkpoint import Size, qwen2_config


def make_random_engine(out_dir: str | Path, size: Size, limits: EngineLimits, seed: int = 0,
                       quantization: QuantConfig = QuantConfig()):
    """quantization: the seeded weights are quantized on the device at load, as build.convert --weight-only
    would store them (runtime/loader.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = qwen2_config(size, "qwen")  # v1-shaped: no GQA, untied head, rope base 10000
    model = model_config_from_hf(hf, limits.max_seq_len)
    (out / ENGINE_CONFIG_FILE).write_text(EngineConfig(model=model, limits=limits, quantization=quantization).to_json())
    (out / RANDOM_WEIGHTS_FILE).write_text(json.dumps({"seed": seed}))
    shutil.copy2(packaged_vocab(), out / TOKENIZER_FILE)
    return load_engine_folder(out)
