"""A published GPTQ or AWQ Qwen checkpoint (v1 Qwen-7B-Chat-Int4/Int8 or Qwen1.5/2/2.5 GPTQ / AWQ) -> an engine
folder in our weight-only layout, once, at build time. It knows the quantization configs and checkpoint names
(through convert.py's renaming and fusing plan) and must not run the model; the per-linear arithmetic is in
gptq_awq.py."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from pathlib import Path

import torch

from ..config import WEIGHTS_FILE, EngineFolder, EngineLimits, QuantConfig, load_engine_folder
from ..errors import ConfigError
from ..models.quant_linear import is_quantized_layer, quantized_tensors
from ..runtime.loader import TORCH_DTYPES
from ..text.hf_tokenizer import write_hf_tokenizer
from .convert import CheckpointReader, Progress, plan_tensors, stream_safetensors
from .gptq_awq import (QuantFormat, UnpackedLinear, concat_parts, engine_group_size, logical_shape, to_int4,
                       to_int8, unpack_awq, unpack_gptq)
from .hf_metadata import model_config_from_hf, read_hf_config, write_engine_metadata

PACKED_SUFFIXES = (".qzeros", ".scales", ".g_idx")  # stored beside <layer>.qweight; <layer>.bias stays as it is
GPTQ_ZERO_OFFSETS = {"gptq": 1, "gptq_v2": 0}  # auto-gptq (v1) stores zero - 1; GPTQModel's v2 stores zero


def _quantization_config(hf_dir: Path, hf: dict) -> tuple[dict, str]:
    """(the config dict, where it came from): config.json's quantization_config, else quantize_config.json
    (auto-gptq, as in Qwen-7B-Chat-Int4), else quant_config.json (older AutoAWQ)."""
    if hf.get("quantization_config"):
        return hf["quantization_config"], "config.json quantization_config"
    for file in ("quantize_config.json", "quant_config.json"):
        if (hf_dir / file).is_file():
            return json.loads((hf_dir / file).read_text()), file
    raise ConfigError(f"{hf_dir}: no quantization_config in config.json, quantize_config.json or "
                      "quant_config.json: not a GPTQ/AWQ checkpoint (use python -m build.convert)")


def read_quant_format(hf_dir: str | Path, hf: dict | None = None) -> QuantFormat:
    """The checkpoint's GPTQ / AWQ settings, refused with the reason when the importer cannot hold them."""
    hf_dir = Path(hf_dir)
    config, where = _quantization_config(hf_dir, hf if hf is not None else read_hf_config(hf_dir))
    method = str(config.get("quant_method") or ("awq" if "w_bit" in config else "gptq")).lower()
    bits = int(config.get("bits", config.get("w_bit", 0)))
    group_size = int(config.get("group_size", config.get("q_group_size", 0)))
    if bits not in (4, 8):
        raise ConfigError(f"{where}: bits {bits} not supported (4 or 8)")
    if group_size != -1 and group_size <= 0:
        raise ConfigError(f"{where}: group_size {group_size} not supported (a positive size or -1)")
    if method == "gptq":
        checkpoint_format = str(config.get("checkpoint_format", "gptq")).lower()
        if checkpoint_format not in GPTQ_ZERO_OFFSETS:
            raise ConfigError(f"{where}: GPTQ checkpoint_format {checkpoint_format!r} not supported "
                              f"({sorted(GPTQ_ZERO_OFFSETS)})")
        return QuantFormat("gptq", bits, group_size, GPTQ_ZERO_OFFSETS[checkpoint_format])
    if method == "awq":
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm" or not config.get("zero_point", True):
            raise ConfigError(f"{where}: AWQ version {version!r} zero_point {config.get('zero_point')} not "
                              "supported (AutoAWQ GEMM packing with zero points only)")
        return QuantFormat("awq", bits, group_size)
    raise ConfigError(f"{where}: quant_method {method!r} is not GPTQ or AWQ")


class QuantizedView:
    """The reader as convert.plan_tensors sees it: each packed linear `<p>.qweight` (+ qzeros, scales, g_idx) is
    one virtual `<p>.weight` of its float (N, K) shape, so the renaming, fusing and shape checks are convert's."""

    def __init__(self, reader: CheckpointReader, fmt: QuantFormat):
        self.reader, self.fmt = reader, fmt
        names = reader.names()
        self.packed = {n[:-len(".qweight")] for n in names if n.endswith(".qweight")}
        for prefix in sorted(self.packed):
            if prefix + ".weight" in names:
                raise ConfigError(f"{prefix}: both a float .weight and a packed .qweight")
            if prefix + ".qzeros" not in names or prefix + ".scales" not in names:
                raise ConfigError(f"{prefix}.qweight: no {prefix}.qzeros / {prefix}.scales beside it")
        self._names = [n[:-len(".qweight")] + ".weight" if n.endswith(".qweight") else n for n in names
                       if not (n.endswith(PACKED_SUFFIXES) and n.rsplit(".", 1)[0] in self.packed)]

    def names(self) -> list[str]:
        return list(self._names)

    def is_packed(self, name: str) -> bool:
        return name.endswith(".weight") and name[:-len(".weight")] in self.packed

    def shape(self, name: str) -> tuple[int, ...]:
        if self.is_packed(name):
            return logical_shape(self.fmt, self.reader.shape(name[:-len(".weight")] + ".qweight"))
        return self.reader.shape(name)

    def unpack(self, name: str) -> UnpackedLinear:
        prefix = name[:-len(".weight")]
        get = self.reader.get
        if self.fmt.method == "awq":
            return unpack_awq(prefix, self.fmt, get(prefix + ".qweight"), get(prefix + ".qzeros"),
                              get(prefix + ".scales"))
        g_idx = get(prefix + ".g_idx") if prefix + ".g_idx" in self.reader.names() else None
        return unpack_gptq(prefix, self.fmt, get(prefix + ".qweight"), get(prefix + ".qzeros"),
                           get(prefix + ".scales"), g_idx)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One planned engine tensor: float (copied in the engine dtype) or a packed linear (re-packed)."""

    target: str  # engine name, `<layer>.weight` for a linear
    sources: tuple[str, ...]  # checkpoint (view) names, concatenated along N in this order
    shape: tuple[int, ...]  # the float shape, (N, K) for a linear
    packed: bool


def plan_entries(view: QuantizedView, kind: str, model) -> list[Entry]:
    entries = []
    for target, sources, shape in plan_tensors(view, kind, model):
        packed = [view.is_packed(s) for s in sources]
        if any(packed) and not all(packed):
            raise ConfigError(f"{target}: some of {list(sources)} are packed and some float; cannot fuse them")
        entries.append(Entry(target, sources, shape, all(packed)))
    return entries


def choose_quant(fmt: QuantFormat, entries: list[Entry]) -> QuantConfig:
    """int4 for 4-bit checkpoints (group size: engine_group_size), int8 for 8-bit; the head only if packed."""
    quantize_head = any(e.packed and e.target == "lm_head.weight" for e in entries)
    if fmt.bits == 8:
        return QuantConfig("int8", None, quantize_head)
    in_features = [e.shape[1] for e in entries if e.packed]
    return QuantConfig("int4", engine_group_size(fmt.group_size, in_features), quantize_head)


def _outputs(entry: Entry, quant: QuantConfig, dtype: torch.dtype) -> dict[str, tuple[torch.dtype, tuple]]:
    if not entry.packed:
        return {entry.target: (dtype, entry.shape)}
    return quantized_tensors(entry.target[:-len(".weight")], *entry.shape, quant)


def _tensors(view: QuantizedView, entry: Entry, quant: QuantConfig, dtype: torch.dtype,
             requantize_int8: bool) -> dict[str, torch.Tensor]:
    if not entry.packed:
        parts = [view.reader.get(s) for s in entry.sources]
        return {entry.target: (parts[0] if len(parts) == 1 else torch.cat(parts)).to(dtype)}
    layer = entry.target[:-len(".weight")]
    fused = concat_parts(layer, [view.unpack(s) for s in entry.sources])
    if quant.weight_only_precision == "int4":
        stored = to_int4(fused, quant.group_size)
    else:
        stored = to_int8(fused, requantize_int8)
    return {f"{layer}.{k}": v for k, v in stored.items()}


def write_entries(path: Path, view: QuantizedView, entries: list[Entry], quant: QuantConfig, dtype: torch.dtype,
                  requantize_int8: bool, progress: Progress | None) -> None:
    """The engine tensors into one safetensors file, one fused linear at a time (convert.stream_safetensors)."""
    layout = {}
    for entry in entries:
        layout.update(_outputs(entry, quant, dtype))
    groups = [(entry.target, functools.partial(_tensors, view, entry, quant, dtype, requantize_int8))
              for entry in entries]
    stream_safetensors(path, layout, groups, progress)


def import_quantized(hf_dir: str | Path, out_dir: str | Path, limits: EngineLimits, dtype: str | None = None,
                     requantize_int8: bool = False, progress: Progress | None = None) -> EngineFolder:
    """Writes a complete engine folder (model.safetensors with the decoder's linears in our int4 / int8 layout
    and the rest in limits.dtype, engine_config.json recording the quantization, tokenizer files) into out_dir."""
    hf_dir, out = Path(hf_dir), Path(out_dir)
    hf = read_hf_config(hf_dir)
    fmt = read_quant_format(hf_dir, hf)
    if dtype is not None and dtype != limits.dtype:
        limits = dataclasses.replace(limits, dtype=dtype)
    model = model_config_from_hf(hf, limits.max_seq_len)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(CheckpointReader(hf_dir)) as reader:
        view = QuantizedView(reader, fmt)
        entries = plan_entries(view, hf["model_type"], model)
        quant = choose_quant(fmt, entries)
        _check_coverage(entries, quant)
        if progress:
            progress(f"{hf_dir}: {fmt.method} {fmt.bits}-bit group {fmt.group_size} ({hf['model_type']} layout) -> "
                     f"{quant.weight_only_precision} group {quant.group_size}, {len(entries)} engine tensors")
        write_entries(out / WEIGHTS_FILE, view, entries, quant, TORCH_DTYPES[limits.dtype], requantize_int8,
                      progress)
    write_engine_metadata(hf_dir, out, model, limits, quant)
    write_hf_tokenizer(out, max_input_len=limits.max_input_len)
    if progress:
        progress(f"wrote engine folder {out}")
    return load_engine_folder(out)


def _check_coverage(entries: list[Entry], quant: QuantConfig) -> None:
    """The runtime quantizes every decoder linear of an engine or none (models/quant_linear.py): a checkpoint
    that left one in float is refused rather than silently re-quantized."""
    for entry in entries:
        layer = entry.target[:-len(".weight")] if entry.target.endswith(".weight") else None
        wanted = layer is not None and is_quantized_layer(layer, quant)
        if wanted != entry.packed:
            state = "is float in the checkpoint" if wanted else "is packed but the engine keeps it float"
            raise ConfigError(f"{entry.target}: {state}; the engine quantizes exactly the decoder's linear layers")
