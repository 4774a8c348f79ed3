"""Fake of TensorRT-LLM 1.0.0 examples/quantization/quantize.py (the fp8 path)."""
import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--model_dir", required=True)
parser.add_argument("--dtype", default="auto")
parser.add_argument("--qformat", required=True, choices=["fp8", "int8_sq", "int4_awq", "w4a8_awq", "full_prec"])
parser.add_argument("--kv_cache_dtype", default=None, choices=["int8", "fp8", None])
parser.add_argument("--output_dir", default="exported_model")
parser.add_argument("--tp_size", type=int, default=1)
parser.add_argument("--calib_size", type=int, default=512)
parser.add_argument("--calib_dataset", default="cnn_dailymail")
args = parser.parse_args()
out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({
    "architecture": "QWenForCausalLM", "dtype": args.dtype, "mapping": {"world_size": args.tp_size},
    "quantization": {"quant_algo": args.qformat.upper(), "kv_cache_quant_algo": (args.kv_cache_dtype or "").upper()}}))
for rank in range(args.tp_size):
    (out / f"rank{rank}.safetensors").write_bytes(b"")
