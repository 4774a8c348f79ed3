"""The TensorRT-LLM build: exact command lines for a matrix of options (dry run), validation before any
work, and the real run path with the fake TensorRT-LLM tools."""
import json
from pathlib import Path

import pytest

from build.trtllm_engine import main as build_main
from qwen_triton.config import load_engine_folder
from qwen_triton.errors import ConfigError
from qwen_triton.trtllm.build import TrtllmBuildOptions, build_command, convert_command, run_build
from qwen_triton.trtllm.settings import EXECUTOR_CONFIG_FILE, ExecutorSettings, load_executor_settings

EX = Path("/opt/TensorRT-LLM/examples")


def options(**overrides):
    base = dict(hf_dir=Path("/hf"), output_dir=Path("/engines/q"), max_seq_len=8192, max_input_len=6144,
                trtllm_examples=EX, python="python3")
    return TrtllmBuildOptions(**{**base, **overrides})


COMMON = ["--model_dir", "/hf", "--output_dir", "/engines/q.ckpt"]


@pytest.mark.parametrize("overrides, expected", [
    ({}, ["python3", f"{EX}/models/core/qwen/convert_checkpoint.py", *COMMON, "--dtype", "float16", "--tp_size", "1"]),
    ({"dtype": "bfloat16", "tp_size": 2},
     ["python3", f"{EX}/models/core/qwen/convert_checkpoint.py", *COMMON, "--dtype", "bfloat16", "--tp_size", "2"]),
    ({"weight_only": "int8"}, ["python3", f"{EX}/models/core/qwen/convert_checkpoint.py", *COMMON, "--dtype", "float16",
                               "--tp_size", "1", "--use_weight_only", "--weight_only_precision", "int8"]),
    ({"weight_only": "int4", "kv_cache": "int8", "calib_dataset": "/data/calib"},
     ["python3", f"{EX}/models/core/qwen/convert_checkpoint.py", *COMMON, "--dtype", "float16", "--tp_size", "1",
      "--use_weight_only", "--weight_only_precision", "int4", "--int8_kv_cache", "--calib_dataset", "/data/calib"]),
    ({"fp8": True}, ["python3", f"{EX}/quantization/quantize.py", *COMMON, "--dtype", "float16", "--tp_size", "1",
                     "--qformat", "fp8", "--kv_cache_dtype", "fp8", "--calib_size", "512"]),
    ({"fp8": True, "kv_cache": "int8", "checkpoint_dir": Path("/work/ckpt")},
     ["python3", f"{EX}/quantization/quantize.py", "--model_dir", "/hf", "--output_dir", "/work/ckpt",
      "--dtype", "float16", "--tp_size", "1", "--qformat", "fp8", "--kv_cache_dtype", "int8", "--calib_size", "512"]),
])
def test_convert_command(overrides, expected):
    assert convert_command(options(**overrides)) == expected


BUILD_TAIL = ["--remove_input_padding", "enable", "--context_fmha", "enable"]


@pytest.mark.parametrize("overrides, expected", [
    ({}, ["trtllm-build", "--checkpoint_dir", "/engines/q.ckpt", "--output_dir", "/engines/q",
          "--max_batch_size", "64", "--max_input_len", "6144", "--max_seq_len", "8192", "--max_num_tokens", "8192",
          "--max_beam_width", "1", "--kv_cache_type", "paged", "--gemm_plugin", "auto",
          "--gpt_attention_plugin", "auto", *BUILD_TAIL, "--use_paged_context_fmha", "enable", "--workers", "1"]),
    ({"max_batch_size": 8, "max_seq_len": 2048, "max_input_len": 1024, "max_num_tokens": 4096, "tp_size": 4,
      "gemm_plugin": "float16", "gpt_attention_plugin": "float16", "paged_kv_cache": False},
     ["trtllm-build", "--checkpoint_dir", "/engines/q.ckpt", "--output_dir", "/engines/q",
      "--max_batch_size", "8", "--max_input_len", "1024", "--max_seq_len", "2048", "--max_num_tokens", "4096",
      "--max_beam_width", "1", "--kv_cache_type", "continuous", "--gemm_plugin", "float16",
      "--gpt_attention_plugin", "float16", *BUILD_TAIL, "--workers", "4"]),
])
def test_build_command(overrides, expected):
    assert build_command(options(**overrides)) == expected


@pytest.mark.parametrize("overrides, message", [
    ({"fp8": True, "weight_only": "int8"}, "exclude each other"),
    ({"kv_cache": "fp8"}, "--fp8"),
    ({"weight_only": "int2"}, "weight_only"),
    ({"dtype": "float32"}, "dtype"),
    ({"max_input_len": 8192}, "max_input_len"),
    ({"max_num_tokens": 1024}, "max_num_batched_tokens"),
    ({"paged_kv_cache": False, "executor": ExecutorSettings(enable_kv_cache_reuse=True)}, "paged"),
])
def test_invalid_options_fail_at_construction(overrides, message):
    with pytest.raises(ConfigError, match=message):
        options(**overrides)


def test_checkpoint_checks_run_before_any_command(tiny_checkpoint, tmp_path):
    lines = []
    with pytest.raises(ConfigError, match="seq_length"):  # the v1 checkpoint's seq_length is 8192
        run_build(options(hf_dir=tiny_checkpoint, output_dir=tmp_path / "e", max_seq_len=9000), lines.append)
    with pytest.raises(ConfigError, match="tp_size 3"):
        run_build(options(hf_dir=tiny_checkpoint, output_dir=tmp_path / "e", tp_size=3), lines.append)
    assert lines == [] and not (tmp_path / "e").exists()


def test_dry_run_prints_numbered_commands_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    build_main(["--hf-dir", str(tiny_checkpoint), "--output-dir", str(tmp_path / "e"), "--max-seq-len", "4096",
                "--weight-only", "int8", "--dry-run", "--trtllm-examples", "/x/examples"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/3] convert the HF checkpoint: ") and "/x/examples/models/core/qwen/convert_checkpoint.py" in lines[0]
    assert "--weight_only_precision int8" in lines[0]
    assert lines[1].startswith("[2/3] build the engine: trtllm-build ") and "--max_seq_len 4096" in lines[1]
    assert lines[2].startswith("[3/3] write engine_config.json")
    assert not (tmp_path / "e").exists()


def test_real_run_with_fake_tools_makes_a_servable_folder(trtllm_engine, tiny_checkpoint):
    trt_config = json.loads((trtllm_engine / "config.json").read_text())
    assert trt_config["build_config"]["max_seq_len"] == 512 and (trtllm_engine / "rank0.engine").is_file()
    folder = load_engine_folder(trtllm_engine)
    assert folder.config.limits.max_input_len == 256 and folder.config.limits.dtype == "float16"
    assert folder.tokenizer_file.read_bytes() == (tiny_checkpoint / "qwen.tiktoken").read_bytes()
    assert (trtllm_engine / EXECUTOR_CONFIG_FILE).is_file()
    assert load_executor_settings(trtllm_engine) == ExecutorSettings()


def test_failing_tool_stops_the_build(tiny_checkpoint, tmp_path):
    opts = options(hf_dir=tiny_checkpoint, output_dir=tmp_path / "e", max_seq_len=4096, max_input_len=1024,
                   trtllm_examples=tmp_path / "missing", python="python3")
    with pytest.raises(ConfigError, match="failed with exit code"):
        run_build(opts, progress=lambda line: None)
    assert not (tmp_path / "e" / "engine_config.json").exists()


def test_executor_settings_file_is_strict(tmp_path):
    (tmp_path / EXECUTOR_CONFIG_FILE).write_text(json.dumps({"kv_cache_free_gpu_mem_fraction": 0.5, "typo": 1}))
    with pytest.raises(ConfigError, match="typo"):
        load_executor_settings(tmp_path)
    with pytest.raises(ConfigError, match="batch_scheduler_policy"):
        ExecutorSettings(batch_scheduler_policy="fifo")


@pytest.mark.parametrize("weight_only", ["none", "int8", "int4"])
def test_the_engine_config_records_tensorrt_llm_weight_only_in_the_same_words(tiny_checkpoint, tmp_path, weight_only):
    from qwen_triton.runtime.loader import load_model
    from qwen_triton.trtllm.build import write_serving_files

    opts = options(hf_dir=tiny_checkpoint, output_dir=tmp_path / "e", max_seq_len=512, max_input_len=256,
                   weight_only=weight_only)
    write_serving_files(opts)
    recorded = json.loads((tmp_path / "e" / "engine_config.json").read_text())["quantization"]
    assert recorded["weight_only_precision"] == (None if weight_only == "none" else weight_only)
    assert recorded["group_size"] is None  # TensorRT-LLM's weight-only is per output channel
    quant = load_engine_folder(tmp_path / "e").config.quantization
    assert quant.weight_only_precision == recorded["weight_only_precision"]
    if weight_only == "int4":  # not the torch runtime's grouped layout: refused by name, before any weight is read
        with pytest.raises(ConfigError, match="per-channel int4"):
            load_model(load_engine_folder(tmp_path / "e"), "cpu", __import__("torch").float32)


def test_a_tensorrt_llm_fp8_engine_records_per_tensor_fp8_which_the_torch_runtime_refuses(tiny_checkpoint, tmp_path):
    from qwen_triton.runtime.loader import load_model
    from qwen_triton.trtllm.build import write_serving_files

    write_serving_files(options(hf_dir=tiny_checkpoint, output_dir=tmp_path / "e", max_seq_len=512, max_input_len=256,
                                fp8=True))
    recorded = json.loads((tmp_path / "e" / "engine_config.json").read_text())["quantization"]
    assert (recorded["quant_algo"], recorded["weight_only_precision"]) == ("FP8", None)  # TensorRT-LLM's QuantAlgo
    with pytest.raises(ConfigError, match="per-tensor fp8"):
        load_model(load_engine_folder(tmp_path / "e"), "cpu", __import__("torch").float32)
