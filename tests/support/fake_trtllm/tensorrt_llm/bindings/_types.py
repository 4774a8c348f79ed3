"""The fake executor module's value types, named and keyworded as in TensorRT-LLM 1.0.0."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ModelType(enum.Enum):
    DECODER_ONLY = 0
    ENCODER_ONLY = 1
    ENCODER_DECODER = 2


class BatchingType(enum.Enum):
    STATIC = 0
    INFLIGHT = 1


class CapacitySchedulerPolicy(enum.Enum):
    MAX_UTILIZATION = 0
    GUARANTEED_NO_EVICT = 1
    STATIC_BATCH = 2


class CommunicationMode(enum.Enum):
    LEADER = 0
    ORCHESTRATOR = 1


class OrchestratorConfig:
    def __init__(self, is_orchestrator=True, worker_executable_path="", orch_leader_comm=None, spawn_processes=True):
        self.is_orchestrator, self.worker_executable_path = is_orchestrator, worker_executable_path


class ParallelConfig:
    def __init__(self, communication_type=None, communication_mode=CommunicationMode.LEADER, device_ids=None,
                 participant_ids=None, orchestrator_config=None):
        self.communication_mode, self.orchestrator_config = communication_mode, orchestrator_config


class SchedulerConfig:
    def __init__(self, capacity_scheduler_policy=CapacitySchedulerPolicy.GUARANTEED_NO_EVICT,
                 context_chunking_policy=None):
        self.capacity_scheduler_policy = capacity_scheduler_policy
        self.context_chunking_policy = context_chunking_policy


class KvCacheConfig:
    def __init__(self, *, enable_block_reuse=False, max_tokens=None, max_attention_window=None,
                 sink_token_length=None, free_gpu_memory_fraction=None, host_cache_size=None,
                 onboard_blocks=True, cross_kv_cache_fraction=None):
        self.enable_block_reuse = enable_block_reuse
        self.max_tokens = max_tokens
        self.free_gpu_memory_fraction = free_gpu_memory_fraction


class ExecutorConfig:
    def __init__(self, max_beam_width=1, scheduler_config=None, kv_cache_config=None, enable_chunked_context=False,
                 normalize_log_probs=True, iter_stats_max_iterations=1000, request_stats_max_iterations=0,
                 batching_type=BatchingType.INFLIGHT, max_batch_size=None, max_num_tokens=None, parallel_config=None,
                 peft_cache_config=None, logits_post_processor_config=None, decoding_config=None,
                 gpu_weights_percent=1.0, max_queue_size=None, extended_runtime_perf_knob_config=None):
        self.max_beam_width = max_beam_width
        self.scheduler_config = scheduler_config or SchedulerConfig()
        self.kv_cache_config = kv_cache_config or KvCacheConfig()
        self.enable_chunked_context = enable_chunked_context
        self.iter_stats_max_iterations = iter_stats_max_iterations
        self.batching_type = batching_type
        self.parallel_config = parallel_config


class SamplingConfig:
    def __init__(self, beam_width=1, *, top_k=None, top_p=None, top_p_min=None, top_p_reset_ids=None,
                 top_p_decay=None, seed=None, temperature=None, min_tokens=None,
                 beam_search_diversity_rate=None, repetition_penalty=None, presence_penalty=None,
                 frequency_penalty=None, length_penalty=None, early_stopping=None, no_repeat_ngram_size=None):
        self.beam_width, self.top_k, self.top_p, self.temperature = beam_width, top_k, top_p, temperature
        self.seed, self.min_tokens = seed, min_tokens
        self.repetition_penalty, self.presence_penalty = repetition_penalty, presence_penalty
        self.frequency_penalty = frequency_penalty


class OutputConfig:
    def __init__(self, return_log_probs=False, return_context_logits=False, return_generation_logits=False,
                 exclude_input_from_output=False, return_encoder_output=False):
        self.return_log_probs = return_log_probs
        self.exclude_input_from_output = exclude_input_from_output


class Request:
    def __init__(self, input_token_ids, max_tokens, *, streaming=False, sampling_config=None, output_config=None,
                 end_id=None, pad_id=None, position_ids=None, bad_words=None, stop_words=None, embedding_bias=None,
                 external_draft_tokens_config=None, prompt_tuning_config=None, lora_config=None,
                 lookahead_config=None, logits_post_processor_name=None, encoder_input_token_ids=None,
                 client_id=None, return_all_generated_tokens=False, priority=0.5, type=None,
                 context_phase_params=None, encoder_input_features=None, encoder_output_length=None,
                 num_return_sequences=1):
        if not input_token_ids or max_tokens <= 0:
            raise ValueError("input_token_ids must be non-empty and max_tokens > 0")
        self.input_token_ids, self.max_tokens, self.streaming = list(input_token_ids), max_tokens, streaming
        self.sampling_config = sampling_config or SamplingConfig()
        self.output_config = output_config or OutputConfig()
        self.end_id, self.pad_id = end_id, pad_id
        self.stop_words, self.bad_words = stop_words, bad_words


@dataclass
class Result:
    is_final: bool
    output_token_ids: list[list[int]]
    cum_log_probs: list[float] | None = None
    log_probs: list[list[float]] | None = None
    context_logits: object = None
    generation_logits: object = None
    sequence_index: int = 0


class Response:
    def __init__(self, request_id, error_msg=None, result=None):
        self._request_id, self._error_msg, self._result = request_id, error_msg, result

    @property
    def request_id(self):
        return self._request_id

    def has_error(self):
        return self._error_msg is not None

    @property
    def error_msg(self):
        if self._error_msg is None:
            raise RuntimeError("Cannot get the error message of a response without error")
        return self._error_msg

    @property
    def result(self):
        if self._error_msg is not None:
            raise RuntimeError("Cannot get the result of a response with an error")
        return self._result


@dataclass
class KvCacheStats:
    max_num_blocks: int
    free_num_blocks: int
    used_num_blocks: int
    tokens_per_block: int
    alloc_total_blocks: int = 0
    alloc_new_blocks: int = 0
    reused_blocks: int = 0
    missed_blocks: int = 0
    cache_hit_rate: float = 0.0


@dataclass
class InflightBatchingStats:
    num_scheduled_requests: int
    num_context_requests: int
    num_gen_requests: int
    num_paused_requests: int = 0
    num_ctx_tokens: int = 0
    micro_batch_id: int = 0


@dataclass
class IterationStats:
    timestamp: str
    iter: int
    num_active_requests: int
    max_num_active_requests: int
    gpu_mem_usage: int = 0
    cpu_mem_usage: int = 0
    pinned_mem_usage: int = 0
    kv_cache_stats: KvCacheStats | None = None
    static_batching_stats: object = None
    inflight_batching_stats: InflightBatchingStats | None = None


@dataclass
class _Active:
    request_id: int
    request: Request
    output: list[int] = field(default_factory=list)
    cancelled: bool = False
