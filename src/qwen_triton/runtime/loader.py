"""Engine folder -> QwenForCausalLM on a device, loading tensor names exactly as build/ wrote them."""
from __future__ import annotations

import torch
from safetensors import safe_open

from ..config import EngineFolder
from ..errors import ConfigError
from ..models.qwen import QwenForCausalLM

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(folder: EngineFolder, device: torch.device, dtype: torch.dtype) -> QwenForCausalLM:
    with torch.device("meta"):
        model = QwenForCausalLM(folder.config.model)
    expected = set(model.state_dict())
    state = {}
    with safe_open(str(folder.weights), framework="pt", device="cpu") as f:
        names = set(f.keys())
        missing, unexpected = expected - names, names - expected
        if missing or unexpected:
            raise ConfigError(f"{folder.weights}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
                              "rebuild the engine with this version's build/convert")
        for name in expected:
            state[name] = f.get_tensor(name).to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()
