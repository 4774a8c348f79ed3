"""HF Qwen folder -> TensorRT-LLM engine folder, with TensorRT-LLM 1.0.0's own tools:
examples/models/core/qwen/convert_checkpoint.py (or examples/quantization/quantize.py for fp8), then `trtllm-build`; then the files
our ensemble reads beside the engine (engine_config.json, executor_config.json, qwen.tiktoken,
generation_config.json, and tokenizer.json / tokenizer_config.json for GenAI-Perf). Commands are built as lists
here and only run by run_build()."""
from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import FP8_PER_TENSOR_ALGO, EngineLimits, QuantConfig
from ..errors import ConfigError
from ..text.hf_tokenizer import write_hf_tokenizer
from ..tools.hf_metadata import model_config_from_hf, read_hf_config, write_engine_metadata
from .settings import EXECUTOR_CONFIG_FILE, ExecutorSettings

DTYPES = ("float16", "bfloat16")
WEIGHT_ONLY = ("none", "int8", "int4")
KV_CACHE = ("auto", "int8", "fp8")  # auto: the compute dtype
PLUGIN_DTYPES = ("auto", "float16", "bfloat16", "float32", "disable")
TOKENS_PER_BLOCK = 64  # trtllm-build's default page size


@dataclass(frozen=True)
class TrtllmBuildOptions:
    hf_dir: Path
    output_dir: Path
    max_seq_len: int  # explicit: TensorRT-LLM has no dynamic NTK, so never past the checkpoint's length
    trtllm_examples: Path  # TensorRT-LLM v1.0.0's examples/ folder
    dtype: str = "float16"
    weight_only: str = "none"
    kv_cache: str = "auto"
    fp8: bool = False  # fp8 weights and activations through ModelOpt (Ada / Hopper GPUs)
    tp_size: int = 1
    max_batch_size: int = 64
    max_input_len: int = 1024
    max_num_tokens: int = 8192
    paged_kv_cache: bool = True
    gemm_plugin: str = "auto"
    gpt_attention_plugin: str = "auto"
    calib_dataset: str | None = None  # int8 KV / fp8 calibration; TensorRT-LLM downloads cnn_dailymail otherwise
    checkpoint_dir: Path | None = None  # intermediate TensorRT-LLM checkpoint; default <output_dir>.ckpt
    python: str = "python3"
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    def __post_init__(self):
        _choice("dtype", self.dtype, DTYPES)
        _choice("weight_only", self.weight_only, WEIGHT_ONLY)
        _choice("kv_cache", self.kv_cache, KV_CACHE)
        _choice("gemm_plugin", self.gemm_plugin, PLUGIN_DTYPES)
        _choice("gpt_attention_plugin", self.gpt_attention_plugin, PLUGIN_DTYPES)
        if self.fp8 and self.weight_only != "none":
            raise ConfigError("fp8 and weight-only quantization exclude each other")
        if self.kv_cache == "fp8" and not self.fp8:
            raise ConfigError("an fp8 KV cache is built through the fp8 (ModelOpt) path: add --fp8")
        if self.tp_size < 1:
            raise ConfigError("tp_size must be >= 1")
        if self.executor.enable_kv_cache_reuse and not self.paged_kv_cache:
            raise ConfigError("KV cache reuse needs the paged KV cache")
        self.limits()  # validates the lengths

    def limits(self) -> EngineLimits:
        return EngineLimits(dtype=self.dtype, max_batch_size=self.max_batch_size, max_input_len=self.max_input_len,
                            max_seq_len=self.max_seq_len, max_num_batched_tokens=self.max_num_tokens,
                            block_size=TOKENS_PER_BLOCK)

    @property
    def checkpoint(self) -> Path:
        return self.checkpoint_dir or self.output_dir.with_name(self.output_dir.name + ".ckpt")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


def convert_command(opts: TrtllmBuildOptions) -> list[str]:
    common = ["--model_dir", str(opts.hf_dir), "--output_dir", str(opts.checkpoint), "--dtype", opts.dtype,
              "--tp_size", str(opts.tp_size)]
    calib = ["--calib_dataset", opts.calib_dataset] if opts.calib_dataset else []
    if opts.fp8:
        kv = "int8" if opts.kv_cache == "int8" else "fp8"
        return [opts.python, str(opts.trtllm_examples / "quantization" / "quantize.py"), *common,
                "--qformat", "fp8", "--kv_cache_dtype", kv, "--calib_size", "512", *calib]
    command = [opts.python, str(opts.trtllm_examples / "models" / "core" / "qwen" / "convert_checkpoint.py"), *common]
    if opts.weight_only != "none":
        command += ["--use_weight_only", "--weight_only_precision", opts.weight_only]
    if opts.kv_cache == "int8":
        command += ["--int8_kv_cache", *calib]
    return command


def build_command(opts: TrtllmBuildOptions) -> list[str]:
    command = ["trtllm-build", "--checkpoint_dir", str(opts.checkpoint), "--output_dir", str(opts.output_dir),
               "--max_batch_size", str(opts.max_batch_size), "--max_input_len", str(opts.max_input_len),
               "--max_seq_len", str(opts.max_seq_len), "--max_num_tokens", str(opts.max_num_tokens),
               "--max_beam_width", "1",
               # --kv_cache_type replaced the deprecated --paged_kv_cache switch
               "--kv_cache_type", "paged" if opts.paged_kv_cache else "continuous",
               "--gemm_plugin", opts.gemm_plugin, "--gpt_attention_plugin", opts.gpt_attention_plugin,
               "--remove_input_padding", "enable", "--context_fmha", "enable"]
    if opts.paged_kv_cache:
        command += ["--use_paged_context_fmha", "enable"]  # needed for KV reuse and chunked context
    return command + ["--workers", str(opts.tp_size)]


def check_checkpoint(opts: TrtllmBuildOptions) -> None:
    """What can be known before hours of conversion: the layout, the length limit, the TP split."""
    hf = read_hf_config(opts.hf_dir)
    model = model_config_from_hf(hf, opts.max_seq_len)
    if model.num_attention_heads % opts.tp_size or model.num_key_value_heads % opts.tp_size:
        raise ConfigError(f"tp_size {opts.tp_size} must divide the {model.num_attention_heads} attention heads "
                          f"and {model.num_key_value_heads} KV heads")


Progress = Callable[[str], None]


def write_serving_files(opts: TrtllmBuildOptions) -> None:
    model = model_config_from_hf(read_hf_config(opts.hf_dir), opts.max_seq_len)
    # TensorRT-LLM's weight-only int8/int4 are per output channel (no group size); its ModelOpt fp8 is per tensor.
    quantization = QuantConfig(weight_only_precision=None if opts.weight_only == "none" else opts.weight_only,
                               quant_algo=FP8_PER_TENSOR_ALGO if opts.fp8 else None)
    write_engine_metadata(opts.hf_dir, opts.output_dir, model, opts.limits(), quantization)
    write_hf_tokenizer(opts.output_dir, max_input_len=opts.max_input_len)
    (opts.output_dir / EXECUTOR_CONFIG_FILE).write_text(opts.executor.to_json())


def run_build(opts: TrtllmBuildOptions, progress: Progress, dry_run: bool = False) -> None:
    check_checkpoint(opts)
    steps = [("convert the HF checkpoint", convert_command(opts)), ("build the engine", build_command(opts))]
    total = len(steps) + 1
    for number, (title, command) in enumerate(steps, start=1):
        progress(f"[{number}/{total}] {title}: {shlex.join(command)}")
        if not dry_run:
            _run(command, progress)
    progress(f"[{total}/{total}] write engine_config.json, {EXECUTOR_CONFIG_FILE}, tokenizer and generation "
             f"defaults into {opts.output_dir}")
    if not dry_run:
        write_serving_files(opts)


def _run(command: list[str], progress: Progress) -> None:
    start = time.monotonic()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"{command[0]} not found: run inside NGC's trtllm container (see Dockerfile.triton)") from exc
    for line in process.stdout:
        progress("    " + line.rstrip())
    if process.wait() != 0:
        raise ConfigError(f"{shlex.join(command[:2])} failed with exit code {process.returncode}")
    progress(f"    done in {time.monotonic() - start:.0f} s")
