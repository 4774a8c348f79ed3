"""Fake of TensorRT-LLM 1.0.0 examples/models/core/qwen/convert_checkpoint.py: the same arguments; writes a checkpoint
config and one empty weights file per rank."""
import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--model_dir", required=True)
parser.add_argument("--tp_size", type=int, default=1)
parser.add_argument("--pp_size", type=int, default=1)
parser.add_argument("--dtype", default="float16", choices=["float32", "bfloat16", "float16"])
parser.add_argument("--use_weight_only", action="store_true")
parser.add_argument("--weight_only_precision", default="int8", choices=["int8", "int4", "int4_gptq"])
parser.add_argument("--int8_kv_cache", action="store_true")
parser.add_argument("--calib_dataset", default="ccdv/cnn_dailymail")
parser.add_argument("--output_dir", default="tllm_checkpoint")
parser.add_argument("--workers", type=int, default=1)
args = parser.parse_args()
hf = json.loads((Path(args.model_dir) / "config.json").read_text())
algo = {"int8": "W8A16", "int4": "W4A16"}.get(args.weight_only_precision) if args.use_weight_only else None
out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({
    "architecture": "QWenForCausalLM", "dtype": args.dtype, "qwen_type": hf["model_type"],
    "mapping": {"world_size": args.tp_size * args.pp_size, "tp_size": args.tp_size, "pp_size": args.pp_size},
    "quantization": {"quant_algo": algo, "kv_cache_quant_algo": "INT8" if args.int8_kv_cache else None}}))
for rank in range(args.tp_size * args.pp_size):
    (out / f"rank{rank}.safetensors").write_bytes(b"")
print("Total time of converting checkpoints: 00:00:00")
