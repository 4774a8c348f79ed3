"""python -m benchmarks.quant_fidelity [--out benchmarks/results/quant_fidelity_cpu.json]: what weight-only
quantization costs in logits on the tiny random checkpoints (CPU, float32 compute). For each layout (v1
Qwen-7B-Chat, Qwen2 GQA + tied) the checkpoint is converted unquantized, int8 and int4 by build/'s converter,
and one fixed sequence of 256 random token ids is run teacher-forced (one causal prefill, logits at every
position) through each engine. Reports the relative error of the logits, ||q - f|| / ||f|| over all positions,
and top-1 agreement (the share of positions where both pick the same next token). The tiny model's hidden size
is 64, so int4 uses groups of 32 and 64 (128 does not divide it). Also records the weight bytes per mode of a
Qwen-7B-shape engine (computed from the layout, float16 where not quantized), and rewrites the block of
docs/quantization.md that shows both.
Measures; tests/fidelity/test_quantized.py holds the bounds."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from qwen_triton.config import FP8_ALGO, EngineLimits, QuantConfig, load_engine_folder
from qwen_triton.models.qwen import AttentionBatch
from qwen_triton.runtime.loader import load_model
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.hf_metadata import model_config_from_hf
from qwen_triton.tools.quantize import weight_bytes
from qwen_triton.tools.random_checkpoint import QWEN_7B, make_random_checkpoint, v1_config

POSITIONS = 256
LIMITS = EngineLimits(dtype="float32", max_batch_size=1, max_input_len=POSITIONS, max_seq_len=POSITIONS + 16)
MODES = {"int8": QuantConfig("int8"), "int4_g32": QuantConfig("int4", group_size=32),
         "int4_g64": QuantConfig("int4", group_size=64), "fp8": QuantConfig(quant_algo=FP8_ALGO)}
FLAVOURS = {"qwen": "v1 (Qwen-7B-Chat layout, untied head)", "qwen2": "Qwen2 (GQA, tied head)"}
SEED = 3
REGULAR_TOKENS = 151643  # ids below the special tokens
DOC_BEGIN, DOC_END = "<!-- quant_fidelity:begin -->", "<!-- quant_fidelity:end -->"
MEMORY_MODES = {"float16": QuantConfig(), "int8": QuantConfig("int8"), "int4_g128": QuantConfig("int4", group_size=128),
                "fp8": QuantConfig(quant_algo=FP8_ALGO),
                "int8_quantized_head": QuantConfig("int8", quantize_head=True),
                "int4_g128_quantized_head": QuantConfig("int4", group_size=128, quantize_head=True)}


@torch.inference_mode()
def teacher_forced_logits(engine: Path, token_ids: torch.Tensor, device: str = "cpu",
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(T,) ids -> (T, vocab) float32 logits (on the CPU) at every position, from one causal prefill on `device`
    in `dtype`, with the kernels the runtime selects there."""
    model = load_model(load_engine_folder(engine), device, dtype)
    m, block_size, T = model.config, LIMITS.block_size, token_ids.shape[0]
    blocks = -(-T // block_size)
    caches = [tuple(torch.zeros(blocks, block_size, m.num_key_value_heads, m.head_dim, device=device, dtype=dtype)
                    for _ in range(2)) for _ in range(m.num_hidden_layers)]
    positions = torch.arange(T, device=device)
    hidden = model(token_ids.to(device), positions, AttentionBatch.prefill(positions, (T,)), caches)  # (T, hidden)
    return model.compute_logits(hidden).float().cpu()  # (T, vocab)


def compare(reference: torch.Tensor, quantized: torch.Tensor) -> dict:
    """(T, vocab) float logits and quantized logits -> relative error and top-1 agreement."""
    return {"relative_error": round(float((quantized - reference).norm() / reference.norm()), 6),
            "top1_agreement": round(float((quantized.argmax(-1) == reference.argmax(-1)).float().mean()), 4)}


def measure_flavour(flavour: str, root: Path, modes: dict[str, QuantConfig] = MODES, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> dict[str, dict]:
    """{mode: compare(...)} for one checkpoint layout, engines built under root: each mode run on `device` in
    `dtype` against the unquantized engine on the CPU in float32 (on a GPU, "float16" is the unquantized engine
    there, the error 16-bit compute alone makes)."""
    checkpoint = make_random_checkpoint(root / flavour / "hf", flavour, seed=SEED)
    token_ids = torch.randint(0, REGULAR_TOKENS, (POSITIONS,), generator=torch.Generator().manual_seed(SEED))
    unquantized = convert_checkpoint(checkpoint, root / flavour / "float", LIMITS).path
    reference = teacher_forced_logits(unquantized, token_ids)
    results = {}
    if device != "cpu":
        results["float16"] = compare(reference, teacher_forced_logits(unquantized, token_ids, device, dtype))
    for mode, quant in modes.items():
        engine = convert_checkpoint(checkpoint, root / flavour / mode, LIMITS, quant=quant).path
        results[mode] = compare(reference, teacher_forced_logits(engine, token_ids, device, dtype))
    return results


def qwen_7b_weight_gib() -> dict[str, float]:
    model = model_config_from_hf(v1_config(QWEN_7B), max_seq_len=8192)
    return {mode: round(weight_bytes(model, torch.float16, quant) / 2**30, 2) for mode, quant in MEMORY_MODES.items()}


def markdown(report: dict) -> str:
    """The block docs/quantization.md shows between DOC_BEGIN and DOC_END, made from a report."""
    lines = ["| checkpoint | mode | relative logit error | top-1 agreement |", "|---|---|---|---|"]
    for flavour, results in report["results"].items():
        for mode, r in results.items():
            lines.append(f"| {report['checkpoints'][flavour]} | {mode} | {r['relative_error']:.4f} | "
                         f"{r['top1_agreement']:.2%} |")
    lines += ["", "| Qwen-7B engine weights | GiB |", "|---|---|"]
    lines += [f"| {mode} | {gib:.2f} |" for mode, gib in report["qwen_7b_weight_gib"].items()]
    return "\n".join(lines)


def write_doc(report: dict, doc: Path) -> None:
    text = doc.read_text()
    head, rest = text.split(DOC_BEGIN, 1)
    doc.write_text(f"{head}{DOC_BEGIN}\n{markdown(report)}\n{DOC_END}{rest.split(DOC_END, 1)[1]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cuda: every mode in float16 with the GPU's kernels "
                        "(fp8's prefill through models/fp8_gemm.py), against the CPU float32 reference")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/quant_fidelity_<device>.json")
    parser.add_argument("--doc", default=None, help="rewrite its generated block ('' to skip; default: "
                        "docs/quantization.md on the CPU, none on a GPU)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="the quantized modes to measure, in this order (default: all)")
    args = parser.parse_args(argv)
    modes = {mode: MODES[mode] for mode in args.modes}
    on_cpu = args.device == "cpu"
    out = args.out or f"benchmarks/results/quant_fidelity_{args.device.split(':')[0]}.json"
    doc = args.doc if args.doc is not None else ("docs/quantization.md" if on_cpu else "")
    dtype = torch.float32 if on_cpu else torch.float16
    with tempfile.TemporaryDirectory() as tmp:
        results = {flavour: measure_flavour(flavour, Path(tmp), modes, args.device, dtype) for flavour in FLAVOURS}
    report = {"command": "python -m benchmarks.quant_fidelity" + ("" if on_cpu else f" --device {args.device}")
                                  + ("" if modes.keys() == MODES.keys() else " --modes " + " ".join(modes)),
              "device": args.device if on_cpu else torch.cuda.get_device_name(),
              "compute_dtype": str(dtype).removeprefix("torch."), "reference": "the unquantized engine, CPU, float32",
              "positions": POSITIONS, "teacher_forced": True, "checkpoints": FLAVOURS, "seed": SEED,
              "modes": {mode: {"weight_only_precision": q.weight_only_precision, "group_size": q.group_size,
                               "quant_algo": q.quant_algo} for mode, q in modes.items()},
              "results": results, "qwen_7b_weight_gib": qwen_7b_weight_gib()}
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    if doc:
        write_doc(report, Path(doc))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
