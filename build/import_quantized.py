"""python -m build.import_quantized --hf-dir DIR --out ENGINE_DIR: a published GPTQ or AWQ Qwen checkpoint
(Qwen-7B-Chat-Int4/Int8, Qwen1.5/2/2.5-*-GPTQ-Int4/Int8 or -AWQ) -> engine folder in our weight-only layout."""
import argparse

from qwen_triton.config import DTYPES, EngineLimits
from qwen_triton.errors import ConfigError
from qwen_triton.tools.gptq_awq_import import import_quantized


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hf-dir", required=True, help="GPTQ / AWQ checkpoint folder (config.json + weights)")
    parser.add_argument("--out", required=True, help="engine folder to write")
    parser.add_argument("--dtype", default="float16", choices=DTYPES,
                        help="dtype of the tensors that stay float (embedding, norms, biases, head)")
    parser.add_argument("--requantize-int8", action="store_true",
                        help="8-bit GPTQ with groups or asymmetric zeros: dequantize and re-quantize to int8 per "
                             "channel (lossy); without it such checkpoints are refused")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-input-len", type=int, default=1024)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="default: max(4096, max_input_len)")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.85)
    parser.add_argument("--enable-kv-cache-reuse", action="store_true",
                        help="prefix caching: a prompt starting with the tokens of an earlier one reuses its KV blocks")
    args = parser.parse_args(argv)
    try:
        limits = EngineLimits(dtype=args.dtype, max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
                              max_seq_len=args.max_seq_len, block_size=args.block_size,
                              kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
                              enable_kv_cache_reuse=args.enable_kv_cache_reuse,
                              max_num_batched_tokens=args.max_num_batched_tokens or max(4096, args.max_input_len))
        import_quantized(args.hf_dir, args.out, limits, requantize_int8=args.requantize_int8, progress=print)
    except ConfigError as exc:
        raise SystemExit(f"build.import_quantized: {exc}") from exc


if __name__ == "__main__":
    main()
