"""SamplingParams -> TensorRT-LLM Executor objects, written against tensorrt_llm 1.0.0
(`tensorrt_llm.bindings.executor`, as NGC's 25.10-trtllm-python-py3 ships it). The keyword names are 1.0's:
`max_tokens`, `seed` and `min_tokens` replaced 0.14's `max_new_tokens`, `random_seed` and `min_length`, whose
aliases were removed in 2025 (TensorRT-LLM PR #3732)."""
from __future__ import annotations

from ..config import EngineLimits
from ..errors import InvalidRequest
from ..engine_api import SamplingParams
from ..vocab import IM_END_ID
from .settings import ExecutorSettings


def sampling_config(trtllm, params: SamplingParams):
    kwargs = {"beam_width": 1}
    if params.greedy:
        kwargs["top_k"] = 1
    else:
        kwargs["temperature"] = params.temperature
        if params.top_k > 0:
            kwargs["top_k"] = params.top_k
        if params.top_p < 1.0:
            kwargs["top_p"] = params.top_p
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.presence_penalty:
        kwargs["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        kwargs["frequency_penalty"] = params.frequency_penalty
    if params.min_tokens:
        kwargs["min_tokens"] = params.min_tokens
    if params.seed is not None:
        kwargs["seed"] = params.seed
    return trtllm.SamplingConfig(**kwargs)


def executor_request(trtllm, prompt_ids: list[int], params: SamplingParams, limits: EngineLimits):
    if params.logit_bias:  # Request(embedding_bias=) wants a tensor of the engine's padded vocabulary and
        # logits dtype, which this adapter has not been run against; refused rather than guessed.
        raise InvalidRequest("embedding_bias", "is served by the torch runtime only, not the TensorRT-LLM one")
    # end_id is <|im_end|>: TensorRT-LLM's own Qwen example stops only at <|endoftext|> and runs past the
    # end of the ChatML turn. The other Qwen stop tokens (and a client's end_id) become stop words.
    stop_words = [[token] for token in params.stop_token_ids if token != IM_END_ID]
    return trtllm.Request(
        input_token_ids=list(prompt_ids),
        max_tokens=min(params.max_tokens, limits.max_seq_len - len(prompt_ids)),
        # Always streamed from the executor: every token reaches the service, which cuts text at UTF-8
        # boundaries, matches stop strings, notices client cancellation, and answers once when not streaming.
        streaming=True,
        sampling_config=sampling_config(trtllm, params),
        output_config=trtllm.OutputConfig(exclude_input_from_output=True, return_log_probs=params.logprobs),
        end_id=IM_END_ID,
        pad_id=params.pad_id,
        stop_words=stop_words,
        bad_words=[list(word) for word in params.bad_words_ids] or None,
    )


def parallel_config(trtllm, world_size: int, settings: ExecutorSettings):
    if world_size == 1:
        return None  # one GPU: the executor runs in this process
    return trtllm.ParallelConfig(
        communication_mode=trtllm.CommunicationMode.ORCHESTRATOR,
        orchestrator_config=trtllm.OrchestratorConfig(True, settings.executor_worker_path))


def executor_config(trtllm, settings: ExecutorSettings, world_size: int = 1):
    policies = {"guaranteed_no_evict": trtllm.CapacitySchedulerPolicy.GUARANTEED_NO_EVICT,
                "max_utilization": trtllm.CapacitySchedulerPolicy.MAX_UTILIZATION}
    kv_cache = {"enable_block_reuse": settings.enable_kv_cache_reuse,
                "free_gpu_memory_fraction": settings.kv_cache_free_gpu_mem_fraction}
    if settings.max_tokens_in_paged_kv_cache is not None:
        kv_cache["max_tokens"] = settings.max_tokens_in_paged_kv_cache
    kwargs = dict(max_beam_width=1,
                  scheduler_config=trtllm.SchedulerConfig(policies[settings.batch_scheduler_policy]),
                  kv_cache_config=trtllm.KvCacheConfig(**kv_cache),
                  enable_chunked_context=settings.enable_chunked_context,
                  batching_type=trtllm.BatchingType.INFLIGHT)
    parallel = parallel_config(trtllm, world_size, settings)
    if parallel is not None:  # as tensorrtllm_backend does: unset optionals are left out, not passed as None
        kwargs["parallel_config"] = parallel
    return trtllm.ExecutorConfig(**kwargs)
