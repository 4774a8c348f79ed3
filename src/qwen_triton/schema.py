"""The wire schema: every tensor name, dtype and shape of the four Triton models, defined once.

config.pbtxt files, clients and tests check against these objects. Client-facing names
follow NVIDIA tensorrtllm_backend so its clients and GenAI-Perf (--backend tensorrtllm) work.
Dims exclude the batch dimension (every model has max_batch_size > 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Triton dtype name (config.pbtxt TYPE_<name>, tritonclient "<name>") -> numpy dtype.
NUMPY_DTYPES = {
    "STRING": np.object_,
    "BOOL": np.bool_,
    "INT32": np.int32,
    "UINT64": np.uint64,
    "FP32": np.float32,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # key of NUMPY_DTYPES
    dims: tuple[int, ...] = (1,)
    optional: bool = False

    @property
    def numpy_dtype(self):
        return NUMPY_DTYPES[self.dtype]

    @property
    def wire_dtype(self) -> str:
        """The datatype name clients send (config.pbtxt TYPE_STRING travels as BYTES)."""
        return "BYTES" if self.dtype == "STRING" else self.dtype


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    decoupled: bool = False

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name)


def _by_name(specs: tuple[TensorSpec, ...], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)


def _opt(name: str, dtype: str, dims: tuple[int, ...] = (1,)) -> TensorSpec:
    return TensorSpec(name, dtype, dims, optional=True)


# Sampling knobs: the same name and type on the ensemble and on tensorrt_llm (wired straight through).
SAMPLING_INPUTS = (
    _opt("temperature", "FP32"),
    _opt("top_k", "INT32"),
    _opt("top_p", "FP32"),
    _opt("repetition_penalty", "FP32"),
    _opt("presence_penalty", "FP32"),
    _opt("frequency_penalty", "FP32"),
    _opt("min_tokens", "INT32"),
    _opt("seed", "UINT64"),
)
# tensorrtllm_backend's internal names for the same knobs on its tensorrt_llm model.
TRTLLM_SAMPLING_NAMES = {
    "temperature": "temperature",
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "min_tokens": "min_tokens",
    "seed": "random_seed",
}

STATS_OUTPUTS = (
    TensorSpec("finish_reason", "STRING"),  # "stop" | "length" | "cancelled"; "" on non-final chunks
    TensorSpec("num_input_tokens", "INT32"),
    TensorSpec("num_output_tokens", "INT32"),  # generated so far, stop tokens excluded
)

# text_input is required, but marked optional: Triton 2.51's ensemble answers a request that lacks a required
# input with the final flag alone (an empty success); optional, its absence reaches preprocessing, which
# refuses it by name (INVALID_ARG "text_input: is required").
TEXT_INPUT = _opt("text_input", "STRING")

ENSEMBLE = ModelSpec(
    name="ensemble",
    inputs=(
        TEXT_INPUT,
        _opt("max_tokens", "INT32"),
        _opt("stream", "BOOL"),
        *SAMPLING_INPUTS,
        _opt("stop_words", "STRING", (-1,)),
        _opt("bad_words", "STRING", (-1,)),
        _opt("end_id", "INT32"),
        _opt("pad_id", "INT32"),
        _opt("exclude_input_in_output", "BOOL"),
        _opt("system_prompt", "STRING"),
        _opt("history", "STRING"),
        _opt("apply_chat_template", "BOOL"),
    ),
    outputs=(TensorSpec("text_output", "STRING"), *STATS_OUTPUTS),
    decoupled=True,
)

PREPROCESSING = ModelSpec(
    name="preprocessing",
    inputs=(
        TEXT_INPUT,
        _opt("max_tokens", "INT32"),
        _opt("stop_words", "STRING", (-1,)),
        _opt("bad_words", "STRING", (-1,)),
        _opt("end_id", "INT32"),
        _opt("pad_id", "INT32"),
        _opt("system_prompt", "STRING"),
        _opt("history", "STRING"),
        _opt("apply_chat_template", "BOOL"),
    ),
    outputs=(
        TensorSpec("input_ids", "INT32", (-1,)),
        TensorSpec("input_lengths", "INT32"),
        TensorSpec("request_output_len", "INT32"),
        # tensorrtllm_backend's word-list layout: row 0 flat token ids, row 1 end offsets padded with -1.
        TensorSpec("stop_words_list", "INT32", (2, -1)),
        TensorSpec("bad_words_list", "INT32", (2, -1)),
        TensorSpec("end_id", "INT32"),
        TensorSpec("pad_id", "INT32"),
        TensorSpec("cancel_probe_ms", "INT32"),  # the ensemble's opt-in to cancellation probes (below)
    ),
)

TENSORRT_LLM = ModelSpec(
    name="tensorrt_llm",
    inputs=(
        TensorSpec("input_ids", "INT32", (-1,)),
        TensorSpec("input_lengths", "INT32"),
        TensorSpec("request_output_len", "INT32"),
        _opt("streaming", "BOOL"),
        _opt("end_id", "INT32"),
        _opt("pad_id", "INT32"),
        _opt("stop_words_list", "INT32", (2, -1)),
        _opt("bad_words_list", "INT32", (2, -1)),
        *(_opt(TRTLLM_SAMPLING_NAMES[s.name], s.dtype) for s in SAMPLING_INPUTS),
        _opt("exclude_input_in_output", "BOOL"),
        # Cancellation through the ensemble (docs/cancellation.md). cancel_probe_ms > 0: every response carries
        # request_key, and a response holding only request_key is sent whenever the request has been silent
        # that long, so the ensemble schedules a postprocessing step that can see its cancellation.
        _opt("cancel_probe_ms", "INT32"),
        # stop=true: not a generation; ends the running request whose request_key is given (cancelled).
        _opt("stop", "BOOL"),
        _opt("request_key", "UINT64"),
    ),
    outputs=(
        # Tokens released by this response: streaming sends deltas cut at UTF-8 boundaries,
        # non-streaming sends everything once. Decoding them needs no state.
        TensorSpec("output_ids", "INT32", (-1,)),
        TensorSpec("sequence_length", "INT32"),
        *STATS_OUTPUTS,
        TensorSpec("request_key", "UINT64"),  # only with cancel_probe_ms; alone in a probe
    ),
    decoupled=True,
)

POSTPROCESSING = ModelSpec(
    name="postprocessing",
    inputs=(
        # All but request_key are absent in a probe (a tensorrt_llm response with only request_key), which is
        # answered with the final flag alone. The counts pass through: Triton's ensemble takes its outputs from
        # one decoupled model only.
        _opt("tokens_batch", "INT32", (-1,)),
        _opt("sequence_length", "INT32"),
        *(_opt(t.name, t.dtype, t.dims) for t in STATS_OUTPUTS),
        _opt("request_key", "UINT64"),
    ),
    outputs=(TensorSpec("text_output", "STRING"), *STATS_OUTPUTS),
    decoupled=True,
)

ALL_MODELS = (PREPROCESSING, TENSORRT_LLM, POSTPROCESSING, ENSEMBLE)
