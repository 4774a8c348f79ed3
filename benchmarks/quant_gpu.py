"""The quantized modes of the GPU benchmark (weight-only int8 and int4, fp8 W8A8) (benchmarks.gpu runs them after the 16-bit engine, same
run, same load): a random Qwen-7B-shape engine per mode, quantized at load by build/'s quantizer, served through
the Triton ensemble; batch-1 decode and the c64 window, the bytes a decode step reads and the bandwidth floor
they set, and the time to first token of a 512-token prompt (fp8's matmuls are where prefill's time goes).
Measures and records; asserts nothing."""
from __future__ import annotations

import statistics
from pathlib import Path

import torch

from qwen_triton.config import FP8_ALGO, EngineLimits, QuantConfig, load_engine_folder
from qwen_triton.tools.quantize import weight_bytes
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .load_generator import Job, result_dict, run_jobs, ttft_samples_ms

# Group 128: what TensorRT-LLM's and Qwen's published int4 checkpoints (GPTQ, AWQ) use.
MODES = {"int8": QuantConfig("int8"), "int4": QuantConfig("int4", group_size=128),
         "fp8": QuantConfig(quant_algo=FP8_ALGO)}


def decode_bytes_per_step(engine_dir: Path) -> int:
    """Bytes of weights a decode step reads once: everything the engine stores (16-bit, or quantized where its
    quantization says) except the embedding, of which one row per token is gathered."""
    config = load_engine_folder(engine_dir).config
    m = config.model
    return weight_bytes(m, torch.float16, config.quantization) - 2 * m.vocab_size * m.hidden_size


def run_mode(mode: str, work: Path, limits: EngineLimits, serve, c64_window, bs1_job: Job, ttft_job: Job,
             copy_gbs: float) -> dict:
    """serve(engine_dir, work) -> (server, ports) and c64_window(url) are benchmarks.gpu's, so every mode is
    loaded and measured exactly as the 16-bit engine is."""
    engine_dir = work / f"engine-{mode}"
    make_random_engine(engine_dir, QWEN_7B, limits, seed=0, quantization=MODES[mode])
    server, ports = serve(engine_dir, work)
    with server:
        url = f"127.0.0.1:{ports.grpc}"
        run_jobs(url, 4, [Job(bs1_job.prompt, 16, True)] * 8)  # warm-up
        bs1 = run_jobs(url, 1, [bs1_job] * 3)
        ttft_samples_ms(url, ttft_job, repeats=0)  # the first long prompt: not counted
        ttft = ttft_samples_ms(url, ttft_job, repeats=8)
        c64 = c64_window(url)
    n_bytes = decode_bytes_per_step(engine_dir)
    return {"quantization": {"weight_only_precision": MODES[mode].weight_only_precision,
                             "group_size": MODES[mode].group_size},
            "decode_bytes_per_step": n_bytes, "bandwidth_floor_bs1_tok_s": round(copy_gbs * 1e9 / n_bytes, 1),
            "bs1": result_dict(bs1), "ttft_512_samples_ms": ttft, "c64": result_dict(c64)}


def summary_fields(runs: dict[str, dict], fp16_bytes: int) -> dict:
    """The result file's top-level fields per mode, beside the 16-bit ones."""
    fields = {"quant_weight_bytes": {"float16": fp16_bytes, **{m: r["decode_bytes_per_step"] for m, r in runs.items()}}}
    for mode, run in runs.items():
        fields[f"{mode}_bs1_tok_s"] = round(1000 / run["bs1"]["itl_ms_mean"], 2)
        fields[f"{mode}_ttft_512_ms"] = round(statistics.median(run["ttft_512_samples_ms"]), 2)
        fields[f"{mode}_c64_output_tok_s"] = run["c64"]["output_tok_s"]
        fields[f"{mode}_c64_failed_requests"] = run["c64"]["failed"]
        fields[f"{mode}_bandwidth_floor_bs1_tok_s"] = run["bandwidth_floor_bs1_tok_s"]
    return fields
