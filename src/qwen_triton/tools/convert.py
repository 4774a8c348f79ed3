"""HF Qwen checkpoint (v1 Qwen-7B-Chat or Qwen1.5/2/2.5) -> engine folder: renaming and QKV / gate-up fusing
happen here, once, tensor by tensor; the runtime loads the result by name. It knows both HF layouts and the
engine's names and must not run the model."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open

from ..config import WEIGHTS_FILE, EngineFolder, EngineLimits, ModelConfig, QuantConfig, load_engine_folder
from ..errors import ConfigError
from ..models.ops import TORCH_OPS
from ..models.qwen import QwenForCausalLM
from ..runtime.loader import TORCH_DTYPES
from ..text.hf_tokenizer import write_hf_tokenizer
from .hf_metadata import model_config_from_hf, read_hf_config, write_engine_metadata
from .quantize import quantize_weight, stored_tensors

Progress = Callable[[str], None]

V1_RENAMES = [  # v1 name -> engine name; w1 / w2 are fused into gate_up_proj separately
    (r"transformer\.wte\.weight", "model.embed_tokens.weight"),
    (r"transformer\.ln_f\.weight", "model.norm.weight"),
    (r"transformer\.h\.(\d+)\.ln_1\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"transformer\.h\.(\d+)\.ln_2\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"model.layers.\1.self_attn.qkv_proj.\2"),  # [q; k; v]
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]
FUSED_ORDER = {"qkv_proj": ("q", "k", "v"), "gate_up_proj": ("gate", "up")}  # concatenated along dim 0
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8",
                      torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3"}


def engine_name(name: str, kind: str) -> tuple[str | None, str | None]:
    """HF name -> (engine name, part of a fused tensor or None); (None, None) for tensors to drop."""
    if name.endswith("rotary_emb.inv_freq"):  # a buffer some exports carry; recomputed at run time
        return None, None
    if kind == "qwen":
        m = re.fullmatch(r"transformer\.h\.(\d+)\.mlp\.(w1|w2)\.weight", name)
        if m:  # v1 computes c_proj(w1(x) * silu(w2(x))): w2 is the SiLU gate, w1 the up branch
            return f"model.layers.{m.group(1)}.mlp.gate_up_proj.weight", "gate" if m.group(2) == "w2" else "up"
        for pattern, repl in V1_RENAMES:
            if re.fullmatch(pattern, name):
                return re.sub(pattern, repl, name), None
        return name, None  # lm_head.weight; anything else is reported as unexpected
    m = re.fullmatch(r"(model\.layers\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", name)
    if m:
        return f"{m.group(1)}.self_attn.qkv_proj.{m.group(3)}", m.group(2)
    m = re.fullmatch(r"(model\.layers\.\d+)\.mlp\.(gate|up)_proj\.weight", name)
    if m:
        return f"{m.group(1)}.mlp.gate_up_proj.weight", m.group(2)
    return name, None


class CheckpointReader:
    """Lazy name -> tensor over a HF folder: (sharded) safetensors, else pytorch_model*.bin memory-mapped, so
    only the tensors being converted are in memory."""

    def __init__(self, hf_dir: Path):
        self._stack = contextlib.ExitStack()
        self._where: dict[str, object] = {}  # name -> open safetensors file or mmap'd state dict
        files = self._files(hf_dir, "model.safetensors.index.json", "*.safetensors")
        if files:
            for path in files:
                self._add(path, self._stack.enter_context(safe_open(str(path), framework="pt", device="cpu")))
            return
        files = self._files(hf_dir, "pytorch_model.bin.index.json", "pytorch_model*.bin")
        if not files:
            raise ConfigError(f"{hf_dir}: no *.safetensors or pytorch_model*.bin weights")
        for path in files:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
            self._add(path, state)

    @staticmethod
    def _files(hf_dir: Path, index: str, pattern: str) -> list[Path]:
        if (hf_dir / index).is_file():  # shards named by the index, not whatever else lies in the folder
            weight_map = json.loads((hf_dir / index).read_text())["weight_map"]
            return [hf_dir / f for f in sorted(set(weight_map.values()))]
        return sorted(hf_dir.glob(pattern))

    def _add(self, path: Path, source) -> None:
        for name in source.keys():
            if name in self._where:
                raise ConfigError(f"{path}: tensor {name} appears in more than one weight file")
            self._where[name] = source

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        source = self._where[name]
        return tuple(source[name].shape) if isinstance(source, dict) else tuple(source.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        source = self._where[name]
        return source[name] if isinstance(source, dict) else source.get_tensor(name)

    def close(self) -> None:
        self._stack.close()
        self._where.clear()


def plan_tensors(reader: CheckpointReader, kind: str, model: ModelConfig) -> list[tuple[str, tuple[str, ...], tuple]]:
    """[(engine name, HF names to concatenate along dim 0, shape)] in the module's state_dict order, checked
    against the model's names and shapes before any tensor is read."""
    groups: dict[str, dict[str | None, str]] = {}
    for name in reader.names():
        target, part = engine_name(name, kind)
        if target is None or (model.tie_word_embeddings and target == "lm_head.weight"):
            continue  # a tied head some checkpoints still store: the runtime reuses the embedding
        groups.setdefault(target, {})[part] = name
    with torch.device("meta"):  # names and shapes only: the ops are never called
        expected = {k: tuple(v.shape) for k, v in QwenForCausalLM(model, TORCH_OPS).state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(groups)), sorted(set(groups) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"checkpoint does not match its config.json: missing {missing[:8]}, "
                          f"unexpected {unexpected[:8]}")
    plan = []
    for target, shape in expected.items():
        parts = groups[target]
        # Already whole (v1 c_attn, or any unfused name) or fused here from its parts, in FUSED_ORDER.
        order = (None,) if set(parts) == {None} else next(o for k, o in FUSED_ORDER.items() if f".{k}." in target)
        if set(parts) != set(order):
            raise ConfigError(f"{target}: found parts {sorted(map(str, parts))}, need {list(order)}")
        sources = tuple(parts[p] for p in order)
        shapes = [reader.shape(s) for s in sources]
        found = (sum(s[0] for s in shapes), *shapes[0][1:])
        if found != shape:
            raise ConfigError(f"{target}: shape {found} from {list(sources)}, config.json implies {shape}")
        plan.append((target, sources, shape))
    return plan


TensorGroup = tuple[str, Callable[[], dict[str, torch.Tensor]]]  # (label for progress, makes its stored tensors)


def stream_safetensors(path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                       groups: Sequence[TensorGroup], progress: Progress | None) -> None:
    """One safetensors file written as a stream: the header comes from `layout` (name -> (dtype, shape), in file
    order), known before any data; then each group's tensors are made, checked against it, written and dropped,
    so peak memory is one group. A failed run leaves no half-written file at `path`."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in layout.items():
        size = torch.empty((), dtype=dtype).element_size() * math.prod(shape)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for i, (label, make) in enumerate(groups, 1):
            for name, tensor in make().items():
                planned = header[name]
                if [SAFETENSORS_DTYPES[tensor.dtype], list(tensor.shape)] != [planned["dtype"], planned["shape"]]:
                    raise ConfigError(f"{name}: made {tensor.dtype} {tuple(tensor.shape)}, planned {planned}")
                f.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))  # little-endian
            if progress and (i == len(groups) or i % max(1, len(groups) // 20) == 0):
                progress(f"  {i}/{len(groups)} tensors, {f.tell() / 2**30:.2f} GiB written ({label})")
    os.replace(partial, path)


def write_safetensors(path: Path, plan, reader: CheckpointReader, dtype: str, progress: Progress | None,
                      quant: QuantConfig = QuantConfig()) -> None:
    """The planned tensors, each read (fused), converted (quantized, for the layers `quant` names) and written;
    peak memory is one fused tensor and its float32 copy while it is quantized."""
    torch_dtype = TORCH_DTYPES[dtype]
    layout = {}
    for name, _, shape in plan:  # every shape checked before anything is written
        layout.update(stored_tensors(name, shape, torch_dtype, quant))

    def fused(name: str, sources: tuple[str, ...]) -> dict[str, torch.Tensor]:
        parts = [reader.get(s) for s in sources]
        return quantize_weight(name, parts[0] if len(parts) == 1 else torch.cat(parts, dim=0), torch_dtype, quant)

    stream_safetensors(path, layout, [(name, functools.partial(fused, name, sources)) for name, sources, _ in plan],
                       progress)


def convert_checkpoint(hf_dir: str | Path, out_dir: str | Path, limits: EngineLimits, dtype: str | None = None,
                       progress: Progress | None = None, quant: QuantConfig = QuantConfig()) -> EngineFolder:
    """Writes model.safetensors (engine names, stored in limits.dtype; `dtype` overrides it; the layers `quant`
    names in its weight-only layout), engine_config.json, qwen.tiktoken, its Hugging Face twin (tokenizer.json,
    tokenizer_config.json: for GenAI-Perf and AutoTokenizer) and generation_config.json (when the checkpoint has
    one) into out_dir."""
    hf_dir, out = Path(hf_dir), Path(out_dir)
    hf = read_hf_config(hf_dir)
    if dtype is not None and dtype != limits.dtype:
        limits = dataclasses.replace(limits, dtype=dtype)  # a new frozen value; the caller's is untouched
    model = model_config_from_hf(hf, limits.max_seq_len)
    if quant.quantize_head and model.tie_word_embeddings:
        raise ConfigError("--quantize-head: this checkpoint ties lm_head to the embedding, which stays 16-bit")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(CheckpointReader(hf_dir)) as reader:
        plan = plan_tensors(reader, hf["model_type"], model)
        if progress:
            mode = f", weight-only {quant.weight_only_precision}" if quant.weight_only_precision else ""
            mode = f", {quant.quant_algo}" if quant.quant_algo else mode
            progress(f"{hf_dir}: {hf['model_type']} layout -> {len(plan)} engine tensors in {limits.dtype}{mode}")
        write_safetensors(out / WEIGHTS_FILE, plan, reader, limits.dtype, progress, quant)
    write_engine_metadata(hf_dir, out, model, limits, quant)
    write_hf_tokenizer(out, max_input_len=limits.max_input_len)  # from the qwen.tiktoken just copied
    if progress:
        progress(f"wrote engine folder {out}")
    return load_engine_folder(out)
