"""Engine folder -> QwenForCausalLM on a device, loading tensor names exactly as build/ wrote them, with the
model's kernels chosen here, once (models/ops.py select_ops); it must not rename or fuse anything (build/convert
did that once) and knows nothing of the KV cache. Weight-only quantized engines (engine_config.json's
quantization) get QuantLinear layers (models/quant_linear.py) whose stored tensors keep their own dtypes."""
from __future__ import annotations

import torch
from safetensors import safe_open
from torch import nn

from ..config import FP8_ALGO, FP8_PER_TENSOR_ALGO, EngineFolder, QuantConfig
from ..errors import ConfigError
from ..models.ops import Ops, select_ops
from ..models.quant_launch import INT4_MIN_BLOCK_K
from ..models.quant_linear import QuantLinear, is_quantized_layer, quantize_modules
from ..tools.quantize import quantize_weight
from ..models.qwen import Linear, QwenForCausalLM


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _names(names: set[str], limit: int = 10) -> str:
    shown = sorted(names)[:limit]
    return ", ".join(shown) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_model(folder: EngineFolder, device: torch.device | str, dtype: torch.dtype) -> QwenForCausalLM:
    device = torch.device(device)
    model = _load(folder, device, dtype, select_ops(device, dtype))
    if isinstance(model.lm_head, Linear) and device.type == "cpu" and dtype == torch.float32:
        _store_hidden_major(model.lm_head.weight)
    for layer in model.modules():
        if isinstance(layer, QuantLinear):
            layer.prepare(dtype)  # the op set's own int4 layout, once (models/ops.py prepare_int4)
    return model


@torch.no_grad()
def _store_hidden_major(weight: torch.Tensor) -> None:
    # Same (vocab, hidden) tensor, same values, stored as its transpose: for the few rows of a decode step
    # MKL's float32 GEMM then streams contiguous vocab-long rows instead of computing vocab short dot products,
    # which is faster on CPU. bfloat16 is slower this way, so it keeps the checkpoint's order. CPU models use
    # the torch ops, which take any strides.
    weight.data = weight.data.t().contiguous().t()


def _load(folder: EngineFolder, device: torch.device, dtype: torch.dtype, ops: Ops) -> QwenForCausalLM:
    quant = folder.config.quantization
    if quant.weight_only_precision == "int4" and quant.group_size is None:
        raise ConfigError(f"{folder.path}: per-channel int4 is TensorRT-LLM's layout (serve it with runtime "
                          f"tensorrt_llm); the torch runtime's int4 is grouped (build.convert --weight-only int4)")
    if quant.quant_algo == FP8_PER_TENSOR_ALGO:
        raise ConfigError(f"{folder.path}: per-tensor fp8 ({FP8_PER_TENSOR_ALGO}) is TensorRT-LLM's (serve it with "
                          f"runtime tensorrt_llm); the torch runtime's fp8 is {FP8_ALGO} (build.convert --fp8)")
    if quant.precision == "int4" and device.type == "cuda" and quant.group_size % INT4_MIN_BLOCK_K:
        raise ConfigError(f"{folder.path}: int4 on a GPU needs a group_size that is a multiple of {INT4_MIN_BLOCK_K} "
                          f"(the kernels' tiles lie inside one group), got {quant.group_size}; re-quantize with group "
                          f"32, 64 or 128, or serve this engine on the CPU")
    if quant.precision == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        raise ConfigError(f"{folder.path}: fp8 ({quant.quant_algo}) needs a GPU of compute capability 8.9 or "
                          f"newer (Ada, Hopper); this one is {torch.cuda.get_device_capability(device)}")
    if folder.random_weights_seed is not None:
        return random_model(folder, device, dtype, folder.random_weights_seed, ops)
    if not folder.weights.is_file():
        raise ConfigError(f"{folder.weights} not found: build the engine with python -m build.convert")
    with torch.device("meta"):  # no memory until the real tensors are assigned
        model = quantize_modules(QwenForCausalLM(folder.config.model, ops), quant)
    expected = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}  # cast to dtype; quantized buffers keep theirs
    state = {}
    with safe_open(str(folder.weights), framework="pt", device="cpu") as f:
        found = set(f.keys())
        missing, unexpected = set(expected) - found, found - set(expected)
        if missing or unexpected:
            raise ConfigError(f"{folder.weights} does not match the model: missing [{_names(missing)}], "
                              f"unexpected [{_names(unexpected)}]; rebuild the engine with build/convert")
        for name, meta in expected.items():
            tensor = f.get_tensor(name)
            if tensor.shape != meta.shape or (name not in parameters and tensor.dtype != meta.dtype):
                raise ConfigError(f"{folder.weights}: {name} is {tuple(tensor.shape)} {tensor.dtype}, "
                                  f"engine_config.json implies {tuple(meta.shape)} {meta.dtype}")
            state[name] = _aligned(tensor.to(device=device, dtype=dtype if name in parameters else tensor.dtype))
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


CPU_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives, and its vectorized kernels may assume


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """safetensors hands out CPU tensors at their offsets in the file, not CPU_ALIGNMENT-aligned, and a tensor
    the load does not cast stays there: torch's bfloat16 int8 weight-only kernel crashes on such a weight (an
    offset that is not a multiple of 16 bytes, from 16 rows of x on). Those are copied once into memory of their
    own."""
    if tensor.device.type == "cpu" and tensor.data_ptr() % CPU_ALIGNMENT:
        return tensor.clone()
    return tensor


@torch.no_grad()
def random_model(folder: EngineFolder, device: torch.device, dtype: torch.dtype, seed: int,
                 ops: Ops) -> QwenForCausalLM:
    """Seeded random weights made on the device: a Qwen-7B-shape benchmark engine without a 15 GB file."""
    with torch.device(device):
        model = QwenForCausalLM(folder.config.model, ops).to(dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02, generator=generator)
    return _quantize_random(model, folder.config.quantization).eval()


@torch.no_grad()
def _quantize_random(model: QwenForCausalLM, quant: QuantConfig) -> QwenForCausalLM:
    """A quantized random-weight engine: its seeded float weights quantized on their device, layer by layer, by
    build/'s round-to-nearest quantizer, so it holds what build.convert --weight-only would have stored."""
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and is_quantized_layer(name, quant)):
            continue
        with module.weight.device:
            layer = QuantLinear(module.in_features, module.out_features, module.ops, module.bias is not None, quant)
        for stored, tensor in quantize_weight(f"{name}.weight", module.weight, module.weight.dtype, quant).items():
            setattr(layer, stored.rsplit(".", 1)[1], tensor)  # a registered buffer: replaced, still a buffer
        layer.bias = module.bias
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    return model
