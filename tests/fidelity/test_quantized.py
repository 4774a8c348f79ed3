"""Weight-only int8 and int4 engines and fp8 (W8A8: e4m3 weights and per-token activations, torch._scaled_mm)
against the same tiny random model unquantized (CPU, float32 compute),
teacher-forced over 256 positions (benchmarks/quant_fidelity.py measures; `python -m benchmarks.quant_fidelity`
writes the numbers to benchmarks/results/quant_fidelity_cpu.json). Bounds, set with margin from what that
measured: int8 relative logit error <= 0.02 and top-1 agreement >= 0.95; int4 (groups of 32 and 64) relative
error <= 0.2 and top-1 agreement >= 0.6 (chance is 1 in 151,936); fp8 relative error <= 0.05 and top-1
agreement >= 0.9. Also: a quantized engine's paged decode steps
through ModelRunner (one row at a time, prefill all at once) give its own teacher-forced prefill logits."""
import pytest
import torch

from benchmarks.quant_fidelity import MODES, POSITIONS, compare, measure_flavour, teacher_forced_logits
from qwen_triton.config import FP8_ALGO, EngineLimits, QuantConfig
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.schedule_output import ScheduleOutput
from qwen_triton.engine_api import SamplingParams
from qwen_triton.runtime.sequence import Sequence
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

BOUNDS = {"int8": (0.02, 0.95), "int4": (0.2, 0.6), "fp8": (0.05, 0.9)}  # (most relative error, least top-1 agreement)


@pytest.fixture(scope="module", params=["qwen", "qwen2"], ids=["qwen-v1", "qwen2-gqa-tied"])
def measured(request, tmp_path_factory):
    return measure_flavour(request.param, tmp_path_factory.mktemp(f"quant-{request.param}"))


def test_quantized_logits_stay_close_to_the_float_model(measured):
    assert set(measured) == set(MODES)
    for mode, result in measured.items():
        most_error, least_agreement = BOUNDS[MODES[mode].precision]
        assert 0 < result["relative_error"] <= most_error, (mode, result)  # 0 would mean nothing was quantized
        assert result["top1_agreement"] >= least_agreement, (mode, result)
    assert measured["int8"]["relative_error"] < measured["int4_g32"]["relative_error"]


def test_compare_reports_disagreement():
    reference = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert compare(reference, reference) == {"relative_error": 0.0, "top1_agreement": 1.0}
    assert compare(reference, reference.flip(-1))["top1_agreement"] == 0.0


def _stepped_logits(engine, ids: torch.Tensor, dtype: str) -> torch.Tensor:
    """A 16-token prefill, then one decode step per remaining id: (len(ids) - 15, V) float32, positions 15 on."""
    runner = ModelRunner(engine, device="cpu", dtype=dtype)
    seq = Sequence(ids[:16].tolist(), SamplingParams())
    seq.block_table = [0, 1, 2]
    got = [runner.execute(ScheduleOutput(prefill=(seq,)))[0]]
    for token in ids[16:].tolist():
        seq.num_cached_tokens = len(seq)
        seq.output_ids.append(token)
        got.append(runner.execute(ScheduleOutput(decode=(seq,)))[0])  # one row per step
    return torch.stack(got).float()


@pytest.mark.parametrize("quant", [QuantConfig("int8"), QuantConfig("int4", group_size=32),
                                   QuantConfig(quant_algo=FP8_ALGO)], ids=["int8", "int4", "fp8"])
@torch.inference_mode()
def test_decode_steps_give_the_engines_own_teacher_forced_logits(tmp_path, quant):
    checkpoint = make_random_checkpoint(tmp_path / "hf", "qwen", seed=5)
    limits = EngineLimits(dtype="float32", max_batch_size=2, max_input_len=POSITIONS // 4, max_seq_len=POSITIONS)
    engine = convert_checkpoint(checkpoint, tmp_path / "engine", limits, quant=quant)
    ids = torch.randint(0, 151643, (48,), generator=torch.Generator().manual_seed(5))
    expected = teacher_forced_logits(engine.path, ids)  # (48, V): one 48-token prefill
    got = _stepped_logits(engine, ids, "float32")  # (33, V): positions 15 .. 47
    assert (got - expected[15:]).abs().max() <= 1e-4 * expected.abs().max()
    if quant.precision != "fp8":  # bfloat16 on CPU: torch's int8/int4 kernels (int4 on its own packing)
        half = _stepped_logits(engine, ids, "bfloat16")
        assert (half - got).norm() <= 0.05 * got.norm() and (half.argmax(-1) == got.argmax(-1)).float().mean() >= 0.9
