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
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # key of NUMPY_DTYPES
    dims: tuple[int, ...] = (1,)
    optional: bool = False
    # An output sent with the batch dimension ([1, *dims] for a request). NVIDIA's postprocessing sends text
    # without it (text_output is [1] for one request; its clients read output[0].decode()), so ours does too.
    batched: bool = True

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
# return_log_probs: log-probabilities of the tokens a response releases, and their running sum.
LOGPROB_OUTPUTS = (TensorSpec("cum_log_probs", "FP32", (-1,)), TensorSpec("output_log_probs", "FP32", (-1, -1)))
# Which row of the request and which of its sequences a response is for: always 0 (one of each per request).
INDEX_OUTPUTS = (TensorSpec("batch_index", "INT32"), TensorSpec("sequence_index", "INT32"))
# Outputs of tensorrtllm_backend's ensemble (v0.13 to v0.19) whose inputs are refused here, so they are never
# sent; declared so that a client naming them is not refused by Triton before it reaches the models.
NEVER_SENT_OUTPUTS = (
    TensorSpec("context_logits", "FP32", (-1, -1)),
    TensorSpec("generation_logits", "FP32", (-1, -1, -1)),
    *(TensorSpec(name, "INT32") for name in ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks",
                                             "kv_cache_alloc_total_blocks")),
    *(TensorSpec(name, "INT64") for name in ("arrival_time_ns", "first_scheduled_time_ns", "first_token_time_ns",
                                             "last_token_time_ns")),
    TensorSpec("acceptance_rate", "FP32"),
    TensorSpec("total_accepted_draft_tokens", "INT32"),
    TensorSpec("total_draft_tokens", "INT32"),
)


@dataclass(frozen=True)
class Neutral:
    """An NVIDIA input for a feature this server does not have: accepted at `off` (None: only when absent or
    empty), otherwise refused with INVALID_ARG naming it and saying `why`."""

    spec: TensorSpec
    off: object
    why: str


def _neutral(name: str, dtype: str, off, why: str, dims: tuple[int, ...] = (1,)) -> Neutral:
    return Neutral(_opt(name, dtype, dims), off, why)


_BEAMS = "beam search is not implemented"
_LOGITS = "returning logits is not implemented"
_PTUNING = "prompt-tuning tables are not supported"
_LORA = "LoRA adapters are not supported"
NEUTRAL_SHARED = (
    _neutral("num_return_sequences", "INT32", 1, "one sequence per request"),
    _neutral("beam_width", "INT32", 1, _BEAMS),
    _neutral("return_context_logits", "BOOL", False, _LOGITS),
    _neutral("return_generation_logits", "BOOL", False, _LOGITS),
    _neutral("return_kv_cache_reuse_stats", "BOOL", False, "KV-cache reuse statistics are not implemented"),
    _neutral("return_perf_metrics", "BOOL", False, "per-request perf metrics are not implemented"),
    _neutral("prompt_embedding_table", "FP16", None, _PTUNING, (-1, -1)),
    _neutral("prompt_vocab_size", "INT32", None, _PTUNING),
    _neutral("lora_task_id", "UINT64", None, _LORA),
    _neutral("lora_weights", "FP16", None, _LORA, (-1, -1)),
    _neutral("lora_config", "INT32", None, _LORA, (-1, 3)),
)
NEUTRAL_ENSEMBLE = (
    *NEUTRAL_SHARED,
    _neutral("decoder_text_input", "STRING", None, "Qwen is decoder-only (no encoder input)"),
    _neutral("prompt_table_extra_id", "UINT64", None, _PTUNING),
    _neutral("guided_decoding_guide_type", "STRING", None, "guided decoding is not implemented"),
    _neutral("guided_decoding_guide", "STRING", None, "guided decoding is not implemented"),
)
NEUTRAL_TENSORRT_LLM = (
    *NEUTRAL_SHARED,
    _neutral("prompt_table_extra_ids", "UINT64", None, _PTUNING, (-1,)),
    _neutral("draft_input_ids", "INT32", None, "speculative decoding is not implemented", (-1,)),
    _neutral("decoder_input_ids", "INT32", None, "Qwen is decoder-only (no encoder input)", (-1,)),
    _neutral("runtime_top_p_min", "FP32", None, "top-p decay is not implemented"),
    _neutral("runtime_top_p_decay", "FP32", None, "top-p decay is not implemented"),
    _neutral("runtime_top_p_reset_ids", "INT32", None, "top-p decay is not implemented"),
)
# Beam-search knobs: accepted and without effect, as in TensorRT-LLM at beam width 1.
BEAM_ONLY_ENSEMBLE = (_opt("length_penalty", "FP32"),)
BEAM_ONLY_TENSORRT_LLM = (_opt("len_penalty", "FP32"), _opt("early_stopping", "BOOL"),
                          _opt("beam_search_diversity_rate", "FP32"))

# text_input is required, but marked optional: Triton 2.51's ensemble answers a request that lacks a required
# input with the final flag alone (an empty success); optional, its absence reaches preprocessing, which
# refuses it by name (INVALID_ARG "text_input: is required"). A request with no input for preprocessing at all
# is refused by Triton ("request has 0 inputs").
TEXT_INPUT = _opt("text_input", "STRING")
# Older names (tensorrtllm_backend v0.13 to v0.19 clients, GenAI-Perf) of two knobs; preprocessing resolves
# them, since an ensemble cannot feed two of its inputs to one input of a model.
ALIASES = {"min_length": "min_tokens", "random_seed": "seed"}
ALIAS_INPUTS = (_opt("min_tokens", "INT32"), _opt("min_length", "INT32"), _opt("seed", "UINT64"),
                _opt("random_seed", "UINT64"))
EMBEDDING_BIAS_INPUTS = (_opt("embedding_bias_words", "STRING", (-1,)), _opt("embedding_bias_weights", "FP32", (-1,)))
# What the ensemble wires straight to tensorrt_llm, which settles defaults and limits (preprocessing never sees
# them). Stop strings stay text from the client to tensorrt_llm, which matches them on the decoded text.
STOP_WORDS = _opt("stop_words", "STRING", (-1,))
SETTLED_BY_TENSORRT_LLM = (_opt("max_tokens", "INT32"), STOP_WORDS, _opt("end_id", "INT32"), _opt("pad_id", "INT32"))
CHAT_INPUTS = (
    _opt("bad_words", "STRING", (-1,)),
    _opt("system_prompt", "STRING"),
    _opt("history", "STRING"),
    _opt("apply_chat_template", "BOOL"),
)
# Knobs the ensemble wires straight to tensorrt_llm (min_tokens and seed go through preprocessing).
DIRECT_SAMPLING = tuple(s for s in SAMPLING_INPUTS if s.name not in ALIASES.values())

# The ensemble inputs wired straight to tensorrt_llm (ensemble name -> tensorrt_llm name), defined once: the
# ensemble's config renders its input_map from this and tensorrt_llm_bls forwards by it.
ENSEMBLE_TO_TENSORRT_LLM = {
    "max_tokens": "request_output_len", "stop_words": "stop_words", "end_id": "end_id", "pad_id": "pad_id",
    "stream": "streaming", **{s.name: TRTLLM_SAMPLING_NAMES[s.name] for s in DIRECT_SAMPLING},
    "return_log_probs": "return_log_probs", "exclude_input_in_output": "exclude_input_in_output",
}

ENSEMBLE_TEXT_OUTPUTS = (
    TensorSpec("text_output", "STRING", (-1,), batched=False),
    TensorSpec("finish_reason", "STRING", (-1,), batched=False),  # "stop" | "length" | "cancelled" | ""
    *STATS_OUTPUTS[1:],
    *LOGPROB_OUTPUTS,
    *INDEX_OUTPUTS,
    *NEVER_SENT_OUTPUTS,
)

ENSEMBLE = ModelSpec(
    name="ensemble",
    inputs=(
        TEXT_INPUT,
        *CHAT_INPUTS,
        *SETTLED_BY_TENSORRT_LLM,
        _opt("stream", "BOOL"),
        *DIRECT_SAMPLING,
        *ALIAS_INPUTS,
        _opt("exclude_input_in_output", "BOOL"),
        _opt("return_log_probs", "BOOL"),
        *EMBEDDING_BIAS_INPUTS,
        *BEAM_ONLY_ENSEMBLE,
        *(n.spec for n in NEUTRAL_ENSEMBLE),
    ),
    outputs=ENSEMBLE_TEXT_OUTPUTS,
    decoupled=True,
)

PREPROCESSING = ModelSpec(
    name="preprocessing",
    inputs=(TEXT_INPUT, *CHAT_INPUTS, *ALIAS_INPUTS, *EMBEDDING_BIAS_INPUTS, _opt("exclude_input_in_output", "BOOL"),
            *BEAM_ONLY_ENSEMBLE, *(n.spec for n in NEUTRAL_ENSEMBLE)),
    outputs=(
        TensorSpec("input_ids", "INT32", (-1,)),
        TensorSpec("input_lengths", "INT32"),
        # tensorrtllm_backend's word-list layout: row 0 flat token ids, row 1 end offsets padded with -1.
        TensorSpec("bad_words_list", "INT32", (2, -1)),
        TensorSpec("cancel_probe_ms", "INT32"),  # the ensemble's opt-in to cancellation probes (below)
        # Sent only when the request gives them (a missing output reaches tensorrt_llm as an absent input).
        TensorSpec("min_tokens", "INT32"),
        TensorSpec("seed", "UINT64"),
        TensorSpec("embedding_bias", "FP32", (-1,)),  # vocabulary-sized, added to the logits
        # exclude_input_in_output=false: the ids of text_input alone, which a non-streamed answer starts with
        # (as tensorrtllm_backend's, whose prompt is text_input; ours is text_input in the chat template).
        TensorSpec("echo_ids", "INT32", (-1,)),
    ),
)

TENSORRT_LLM = ModelSpec(
    name="tensorrt_llm",
    inputs=(
        TensorSpec("input_ids", "INT32", (-1,)),
        TensorSpec("input_lengths", "INT32"),
        # Required by tensorrtllm_backend's config; optional here so that its default is settled in one place
        # (the engine's generation_config max_new_tokens).
        _opt("request_output_len", "INT32"),
        _opt("streaming", "BOOL"),
        _opt("end_id", "INT32"),
        # Reaches the runtime (TensorRT-LLM pads with it inside); no response is ever padded: output_ids holds
        # exactly sequence_length ids.
        _opt("pad_id", "INT32"),
        STOP_WORDS,  # text, from the ensemble
        _opt("stop_words_list", "INT32", (2, -1)),  # ids, from NVIDIA's direct clients: decoded once to text
        _opt("bad_words_list", "INT32", (2, -1)),
        *(_opt(TRTLLM_SAMPLING_NAMES[s.name], s.dtype) for s in SAMPLING_INPUTS),
        _opt("min_length", "INT32"),  # tensorrtllm_backend v0.13 to v0.19's name of min_tokens
        _opt("exclude_input_in_output", "BOOL"),
        _opt("echo_ids", "INT32", (-1,)),  # what exclude_input_in_output=false echoes (default: input_ids)
        _opt("return_log_probs", "BOOL"),
        _opt("embedding_bias", "FP32", (-1,)),
        *BEAM_ONLY_TENSORRT_LLM,
        *(n.spec for n in NEUTRAL_TENSORRT_LLM),
        # Cancellation through the ensemble (docs/cancellation.md). cancel_probe_ms > 0: every response carries
        # request_key, and a response holding only request_key is sent whenever the request has been silent
        # that long, so the ensemble schedules a postprocessing step that can see its cancellation.
        _opt("cancel_probe_ms", "INT32"),
        # stop=true: not a generation; ends the running request whose request_key is given (cancelled).
        _opt("stop", "BOOL"),
        _opt("request_key", "UINT64"),
    ),
    outputs=(
        # Tokens released by this response, [1, beam=1, n] as tensorrtllm_backend sends them: streaming sends
        # deltas cut at UTF-8 boundaries, non-streaming sends everything once. Decoding them needs no state.
        TensorSpec("output_ids", "INT32", (-1, -1)),
        TensorSpec("sequence_length", "INT32", (-1,)),
        TensorSpec("text", "STRING"),  # output_ids decoded, once, here: postprocessing passes it on
        *STATS_OUTPUTS,
        *LOGPROB_OUTPUTS,
        *INDEX_OUTPUTS,
        TensorSpec("request_key", "UINT64"),  # only with cancel_probe_ms; alone in a probe
    ),
    decoupled=True,
)

POSTPROCESSING = ModelSpec(
    name="postprocessing",
    inputs=(
        # All but request_key are absent in a probe (a tensorrt_llm response with only request_key), which is
        # answered with the final flag alone. The rest passes through: Triton's ensemble takes its outputs
        # from one decoupled model only.
        _opt("tokens_batch", "INT32", (-1, -1)),
        _opt("sequence_length", "INT32", (-1,)),
        _opt("text", "STRING"),  # tensorrt_llm's decoded text; without it (a direct caller) tokens are decoded
        *(_opt(t.name, t.dtype, t.dims) for t in (*STATS_OUTPUTS, *LOGPROB_OUTPUTS, *INDEX_OUTPUTS)),
        _opt("request_key", "UINT64"),
    ),
    outputs=ENSEMBLE_TEXT_OUTPUTS,
    decoupled=True,
)

ALL_MODELS = (PREPROCESSING, TENSORRT_LLM, POSTPROCESSING, ENSEMBLE)

# NVIDIA's tensorrt_llm_bls (docs/bls.md): preprocessing -> tensorrt_llm -> postprocessing in one Python model
# (tensorrt_llm called through BLS), with the ensemble's client-facing inputs and outputs.
TENSORRT_LLM_BLS = ModelSpec(name="tensorrt_llm_bls", inputs=ENSEMBLE.inputs, outputs=ENSEMBLE.outputs, decoupled=True)

ALL_MODELS = (*ALL_MODELS, TENSORRT_LLM_BLS)
