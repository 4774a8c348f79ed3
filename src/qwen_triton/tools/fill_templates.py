"""Renders model_repository/*/config.pbtxt.template into config.pbtxt (wiring only), failing on any
placeholder left unfilled. Optionally writes the filled repository somewhere else (tests, deployments)."""
from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import load_engine_folder
from ..errors import ConfigError
from ..schema import ALL_MODELS, ENSEMBLE_TO_TENSORRT_LLM, ModelSpec, TensorSpec
from ..serving.model_params import RUNTIMES

TEMPLATE = "config.pbtxt.template"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class TemplateValues:
    engine_dir: str
    max_batch_size: int
    runtime: str = "torch"
    device: str = ""
    dtype: str = ""
    cpu_threads: int = 0  # 0: automatic (LLMModelParams.torch_cpu_threads)
    preprocessing_instance_count: int = 1
    postprocessing_instance_count: int = 1
    bls_instance_count: int = 1  # tensorrt_llm_bls: one suffices (a thread per request)
    decoupled: bool = True  # false: unary infer works, streaming is refused (one response per request)

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if min(self.max_batch_size, self.preprocessing_instance_count, self.postprocessing_instance_count,
               self.bls_instance_count) <= 0:
            raise ConfigError("max_batch_size and instance counts must be > 0")
        if self.cpu_threads < 0:
            raise ConfigError("cpu_threads must be >= 0 (0: automatic)")


def values_for_engine(engine_dir: str | Path, **overrides) -> TemplateValues:
    folder = load_engine_folder(engine_dir)
    defaults = {"engine_dir": str(folder.path.resolve()), "max_batch_size": folder.config.limits.max_batch_size}
    return TemplateValues(**{**defaults, **{k: v for k, v in overrides.items() if v is not None}})


def render(template: str, values: dict[str, object], source: str = "template") -> str:
    def substitute(match: re.Match) -> str:
        return str(values[match.group(1)]) if match.group(1) in values else match.group(0)

    text = PLACEHOLDER.sub(substitute, template)
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise ConfigError(f"{source}: no value for placeholders {left}")
    return text


def _tensor(spec: TensorSpec, is_input: bool) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    optional = " optional: true" if is_input and spec.optional else ""
    return f'  {{ name: "{spec.name}" data_type: TYPE_{spec.dtype} dims: [ {dims} ]{optional} }}'


def render_io(spec: ModelSpec) -> str:
    """The input and output blocks of a model's config.pbtxt, from the wire schema (defined once there)."""
    inputs = ",\n".join(_tensor(t, True) for t in spec.inputs)
    outputs = ",\n".join(_tensor(t, False) for t in spec.outputs)
    return f"input [\n{inputs}\n]\noutput [\n{outputs}\n]"


SPECS = {spec.name: spec for spec in ALL_MODELS}


def _identity_maps(kind: str, names) -> str:
    return "\n".join(f'      {kind}_map {{ key: "{n}" value: "{n}" }}' for n in names)


def _input_maps(wiring: dict[str, str]) -> str:
    """{ensemble input: model input} -> that step's input_map lines."""
    return "\n".join(f'      input_map {{ key: "{model}" value: "{ours}" }}' for ours, model in wiring.items())


def model_fields(name: str) -> dict[str, str]:
    """Placeholders rendered from the schema: a model's io blocks; the ensemble's wiring (every preprocessing
    input from the ensemble input of that name, the inputs tensorrt_llm takes straight from the client, every
    postprocessing output to the client)."""
    if name not in SPECS:
        return {}
    fields = {"io": render_io(SPECS[name])}
    if name == "ensemble":
        fields["preprocessing_input_map"] = _identity_maps("input", (t.name for t in SPECS["preprocessing"].inputs))
        fields["tensorrt_llm_direct_map"] = _input_maps(ENSEMBLE_TO_TENSORRT_LLM)
        fields["postprocessing_output_map"] = _identity_maps("output", (t.name for t in SPECS["postprocessing"].outputs))
    return fields


def fill_repository(source: str | Path, values: TemplateValues, output: str | Path | None = None) -> list[Path]:
    source = Path(source)
    output = Path(output) if output else source
    written = []
    for template in sorted(source.glob(f"*/{TEMPLATE}")):
        model_dir = output / template.parent.name
        if output != source:
            shutil.copytree(template.parent, model_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "config.pbtxt"))
        config = model_dir / "config.pbtxt"
        fields = {k: str(v).lower() if isinstance(v, bool) else v for k, v in asdict(values).items()}
        fields.update(model_fields(template.parent.name))
        config.write_text(render(template.read_text(), fields, str(template)))
        written.append(config)
    if not written:
        raise ConfigError(f"no */{TEMPLATE} under {source}")
    return written
