"""python -m build.trtllm_engine --hf-dir DIR --output-dir ENGINE_DIR --max-seq-len N [options]

HF Qwen folder (Qwen-7B-Chat v1, Qwen1.5/2/2.5) -> TensorRT-LLM engine folder built with TensorRT-LLM 0.14.0's
own tools, then the model repository's templates filled for runtime tensorrt_llm. Run it inside NGC's
tritonserver:24.10-trtllm-python-py3 image (Dockerfile.triton); --dry-run prints the commands only."""
import argparse
import os
import sys
from pathlib import Path

from qwen_triton.errors import ConfigError
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine
from qwen_triton.trtllm.build import DTYPES, KV_CACHE, PLUGIN_DTYPES, WEIGHT_ONLY, TrtllmBuildOptions, run_build
from qwen_triton.trtllm.settings import SCHEDULER_POLICIES, ExecutorSettings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-dir", type=Path, required=True, help="Hugging Face checkpoint folder")
    p.add_argument("--output-dir", type=Path, required=True, help="engine folder to write")
    p.add_argument("--max-seq-len", type=int, required=True,
                   help="prompt + output tokens; at most the checkpoint's seq_length / max_position_embeddings")
    p.add_argument("--max-input-len", type=int, default=1024)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-num-tokens", type=int, default=8192, help="tokens per engine step (prefill budget)")
    p.add_argument("--dtype", choices=DTYPES, default="float16")
    p.add_argument("--weight-only", choices=WEIGHT_ONLY, default="none", help="int8 / int4 weight-only GEMMs")
    p.add_argument("--kv-cache", choices=KV_CACHE, default="auto", help="KV cache precision (auto: --dtype)")
    p.add_argument("--fp8", action="store_true", help="fp8 weights and activations (Ada / Hopper)")
    p.add_argument("--tp-size", type=int, default=1, help="tensor parallel size")
    p.add_argument("--no-paged-kv-cache", action="store_true", help="contiguous KV cache (not recommended)")
    p.add_argument("--gemm-plugin", choices=PLUGIN_DTYPES, default="auto")
    p.add_argument("--gpt-attention-plugin", choices=PLUGIN_DTYPES, default="auto")
    p.add_argument("--calib-dataset", default=None, help="local calibration set for int8 KV / fp8")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="intermediate checkpoint (default: OUT.ckpt)")
    p.add_argument("--trtllm-examples", type=Path, default=Path(os.environ.get("TRTLLM_EXAMPLES", "/opt/TensorRT-LLM/examples")),
                   help="TensorRT-LLM v0.14.0 examples/ folder (env TRTLLM_EXAMPLES)")
    p.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9)
    p.add_argument("--enable-kv-cache-reuse", action="store_true")
    p.add_argument("--batch-scheduler-policy", choices=SCHEDULER_POLICIES, default="guaranteed_no_evict")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"),
                   help="templates to fill for runtime tensorrt_llm ('' to skip)")
    p.add_argument("--dry-run", action="store_true", help="print the commands; run and write nothing")
    return p


def options_from_args(args: argparse.Namespace) -> TrtllmBuildOptions:
    executor = ExecutorSettings(kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
                                enable_kv_cache_reuse=args.enable_kv_cache_reuse,
                                batch_scheduler_policy=args.batch_scheduler_policy)
    return TrtllmBuildOptions(
        hf_dir=args.hf_dir, output_dir=args.output_dir, max_seq_len=args.max_seq_len,
        trtllm_examples=args.trtllm_examples, dtype=args.dtype, weight_only=args.weight_only, kv_cache=args.kv_cache,
        fp8=args.fp8, tp_size=args.tp_size, max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
        max_num_tokens=args.max_num_tokens, paged_kv_cache=not args.no_paged_kv_cache, gemm_plugin=args.gemm_plugin,
        gpt_attention_plugin=args.gpt_attention_plugin, calib_dataset=args.calib_dataset,
        checkpoint_dir=args.checkpoint_dir, python=sys.executable, executor=executor)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    try:
        opts = options_from_args(args)
        run_build(opts, progress=lambda line: print(line, flush=True), dry_run=args.dry_run)
        if str(args.model_repository) and not args.dry_run:
            for path in fill_repository(args.model_repository, values_for_engine(opts.output_dir, runtime="tensorrt_llm")):
                print(f"wrote {path}")
    except ConfigError as exc:
        raise SystemExit(f"build.trtllm_engine: {exc}") from exc


if __name__ == "__main__":
    main()
