"""Session fixtures for fidelity tests: tiny random checkpoints (Qwen2 GQA + tied, and v1 Qwen-7B-Chat layout)
converted by build/'s code, each paired with its transformers Qwen2ForCausalLM reference in float32."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_triton.config import EngineFolder, EngineLimits
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint, reference_checkpoint

FIDELITY_LIMITS = EngineLimits(dtype="float32", max_batch_size=4, max_input_len=128, max_seq_len=256, block_size=16)
SEED = 3


@dataclass(frozen=True)
class Case:
    flavour: str
    checkpoint: Path  # HF layout, as make_random_checkpoint wrote it
    engine: EngineFolder  # as build/convert wrote it
    reference: Qwen2ForCausalLM  # transformers, eager attention, float32, same numbers


def _build(tmp_path_factory, flavour: str) -> tuple[Path, EngineFolder]:
    root = tmp_path_factory.mktemp(f"fidelity-{flavour}")
    checkpoint = make_random_checkpoint(root / "hf", flavour, seed=SEED)
    return checkpoint, convert_checkpoint(checkpoint, root / "engine", FIDELITY_LIMITS)


@pytest.fixture(scope="session")
def qwen2_case(tmp_path_factory) -> Case:
    checkpoint, engine = _build(tmp_path_factory, "qwen2")
    reference = Qwen2ForCausalLM.from_pretrained(checkpoint, attn_implementation="eager", dtype=torch.float32)
    return Case("qwen2", checkpoint, engine, reference.eval())


@pytest.fixture(scope="session")
def v1_case(tmp_path_factory) -> Case:
    # transformers has no v1 (remote-code) model: the reference is Qwen2 holding the generator's
    # Qwen2-named weights, which the v1 file stores under v1 names (c_attn, w1 / w2, ...).
    checkpoint, engine = _build(tmp_path_factory, "qwen")
    state, config = reference_checkpoint("qwen", seed=SEED)
    reference = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="eager"))
    reference.load_state_dict(state, strict=True)
    return Case("qwen", checkpoint, engine, reference.eval())


@pytest.fixture(scope="session", params=["qwen2", "qwen"], ids=["qwen2-gqa-tied", "qwen-v1"])
def case(request) -> Case:
    return request.getfixturevalue("qwen2_case" if request.param == "qwen2" else "v1_case")


@pytest.fixture(scope="session")
def runners():
    """One CPU float32 ModelRunner per engine folder, shared: tests hand out blocks themselves and every
    prefill rewrites the slots it reads."""
    made: dict[Path, ModelRunner] = {}

    def get(case: Case) -> ModelRunner:
        if case.engine.path not in made:
            made[case.engine.path] = ModelRunner(case.engine, device="cpu")
        return made[case.engine.path]

    return get
