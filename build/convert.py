"""python -m build.convert --hf-dir DIR --out ENGINE_DIR [--weight-only int8|int4 | --fp8]: HF Qwen checkpoint (v1
or Qwen2) -> engine folder, optionally with weight-only quantized or fp8 linear layers (docs/quantization.md)."""
import argparse

from qwen_triton.config import DTYPES, FP8_ALGO, WEIGHT_ONLY_PRECISIONS, EngineLimits, QuantConfig
from qwen_triton.errors import ConfigError
from qwen_triton.tools.convert import convert_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hf-dir", required=True, help="Hugging Face checkpoint folder (config.json + weights)")
    parser.add_argument("--out", required=True, help="engine folder to write")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype the weights are stored in")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-input-len", type=int, default=1024)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="default: max(4096, max_input_len)")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--mixed-prefill-tokens", type=int, default=512,
                        help="longest prompt that joins a running decode step (GPU); 0: prefill steps only")
    parser.add_argument("--mixed-max-waiting", type=int, default=0,
                        help="mix only while at most this many prompts wait, else prefill them together; 0: no cap")
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.85,
                        help="share of the GPU memory free after the weights that the KV cache takes")
    parser.add_argument("--enable-kv-cache-reuse", action="store_true",
                        help="prefix caching: a prompt starting with the tokens of an earlier one reuses its KV blocks")
    parser.add_argument("--weight-only", choices=WEIGHT_ONLY_PRECISIONS, default=None,
                        help="round-to-nearest weight-only quantization of every decoder linear layer")
    parser.add_argument("--fp8", action="store_true",
                        help="e4m3 weights per output channel, activations per token at run time (W8A8; on CUDA "
                             "compute capability 8.9+)")
    parser.add_argument("--group-size", type=int, default=128, help="int4: input columns per scale and zero point")
    parser.add_argument("--quantize-head", action="store_true", help="quantize lm_head too (default: 16-bit)")
    args = parser.parse_args(argv)
    try:
        quant = QuantConfig(weight_only_precision=args.weight_only, quantize_head=args.quantize_head,
                            group_size=args.group_size if args.weight_only == "int4" else None,
                            quant_algo=FP8_ALGO if args.fp8 else None)
        limits = EngineLimits(dtype=args.dtype, max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
                              max_seq_len=args.max_seq_len, block_size=args.block_size,
                              mixed_prefill_tokens=args.mixed_prefill_tokens, mixed_max_waiting=args.mixed_max_waiting,
                              kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
                              enable_kv_cache_reuse=args.enable_kv_cache_reuse,
                              max_num_batched_tokens=args.max_num_batched_tokens or max(4096, args.max_input_len))
        convert_checkpoint(args.hf_dir, args.out, limits, progress=print, quant=quant)
    except ConfigError as exc:
        raise SystemExit(f"build.convert: {exc}") from exc


if __name__ == "__main__":
    main()
