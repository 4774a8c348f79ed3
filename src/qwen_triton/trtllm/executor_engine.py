"""The `tensorrt_llm` runtime: TensorRT-LLM's Executor (in-flight batching, paged KV cache) behind the same
interface as runtime.engine.Engine, so the service's text handling is shared.

Where tensorrtllm_backend's Python model is weak, this is not: ids are the executor's own (a client's
request id is never a key), the one shared map is touched only under the lock, a failing sink fails
its own request and the awaiter goes on, and nothing is logged per request.
"""
from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import EngineFolder, EngineLimits
from ..errors import ConfigError, InvalidRequest
from ..engine_api import EngineStats, FinishReason, SamplingParams, Sink, TokenEvent
from . import NGC_IMAGE, TENSORRT_LLM_VERSION
from .executor_request import executor_config, executor_request
from .settings import ExecutorSettings, load_executor_settings

logger = logging.getLogger(__name__)
AWAIT_TIMEOUT = datetime.timedelta(milliseconds=20)  # await_responses returns early when any response is ready


@dataclass
class _Tracked:
    sink: Sink
    num_prompt_tokens: int
    max_tokens: int
    stop_token_ids: frozenset[int]
    num_output_tokens: int = 0
    last_token: int | None = None
    aborted: bool = False


class ExecutorEngine:
    def __init__(self, executor, trtllm, limits: EngineLimits, settings: ExecutorSettings,
                 on_stats: Callable[[EngineStats], None] | None = None):
        self.executor = executor
        self.trtllm = trtllm
        self.limits = limits
        self.settings = settings
        self.on_stats = on_stats
        self._lock = threading.Lock()
        self._tracked: dict[int, _Tracked] = {}
        self._running = True
        self._last_stats: EngineStats | None = None
        self._thread = threading.Thread(target=self._await_loop, name="qwen-trtllm-awaiter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Sink) -> int:
        if len(prompt_ids) > self.limits.max_input_len:
            raise InvalidRequest("input_ids", f"prompt is {len(prompt_ids)} tokens; "
                                              f"this engine accepts at most {self.limits.max_input_len}")
        request = executor_request(self.trtllm, prompt_ids, params, self.limits)
        tracked = _Tracked(sink, len(prompt_ids), params.max_tokens, frozenset(params.stop_token_ids))
        # Under the lock so that the awaiter cannot see a response for an id not yet in the map.
        with self._lock:
            request_id = self.executor.enqueue_request(request)
            self._tracked[request_id] = tracked
        return request_id

    def abort(self, seq_id: int) -> None:
        with self._lock:
            tracked = self._tracked.get(seq_id)
            if tracked is None:
                return
            tracked.aborted = True
        self.executor.cancel_request(seq_id)  # the executor answers with a final response

    def _await_loop(self) -> None:
        next_stats = 0.0
        while self._running:
            try:
                responses = self.executor.await_responses(timeout=AWAIT_TIMEOUT)
            except Exception:
                logger.exception("await_responses failed")
                time.sleep(AWAIT_TIMEOUT.total_seconds())
                continue
            for response in responses:
                self._dispatch(response)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.settings.stats_period_ms / 1000
                self._report_stats()

    def _dispatch(self, response) -> None:
        with self._lock:
            tracked = self._tracked.get(response.request_id)
        if tracked is None:  # already answered (ended by its sink, or failed)
            return
        event = self._event(response, tracked)
        if event.finish_reason is not None:
            self._forget(response.request_id)
        if not self._deliver(tracked, event) and event.finish_reason is None:
            self._forget(response.request_id)
            self.executor.cancel_request(response.request_id)

    def _event(self, response, tracked: _Tracked) -> TokenEvent:
        seq_id = response.request_id
        if response.has_error():
            return TokenEvent(seq_id, (), FinishReason.ERROR, tracked.num_prompt_tokens,
                              tracked.num_output_tokens, response.error_msg)
        result = response.result
        new_tokens = tuple(result.output_token_ids[0])  # beam 0; only the new tokens when streaming
        tracked.num_output_tokens += len(new_tokens)
        if new_tokens:
            tracked.last_token = new_tokens[-1]
        finish = self._finish_reason(tracked) if result.is_final else None
        # log_probs[0] goes with output_token_ids[0]: its last len(new_tokens) values are the new tokens'.
        logprobs = tuple(result.log_probs[0][len(result.log_probs[0]) - len(new_tokens):]) if (
            result.log_probs and new_tokens) else ()
        return TokenEvent(seq_id, new_tokens, finish, tracked.num_prompt_tokens, tracked.num_output_tokens,
                          logprobs=logprobs)

    def _finish_reason(self, tracked: _Tracked) -> FinishReason:
        # Derived from what this adapter knows: Result.finish_reasons is not in every release.
        if tracked.aborted:
            return FinishReason.CANCELLED
        if tracked.last_token in tracked.stop_token_ids:
            return FinishReason.STOP
        if (tracked.num_output_tokens >= tracked.max_tokens
                or tracked.num_prompt_tokens + tracked.num_output_tokens >= self.limits.max_seq_len):
            return FinishReason.LENGTH
        return FinishReason.STOP  # end_id reached (the executor does not return it) or a stop word

    @staticmethod
    def _deliver(tracked: _Tracked, event: TokenEvent) -> bool:
        try:
            return bool(tracked.sink(event))
        except Exception as exc:  # this request fails; the awaiter serves the others
            logger.exception("response sink failed for request %d", event.seq_id)
            failure = TokenEvent(event.seq_id, (), FinishReason.ERROR, event.num_prompt_tokens,
                                 event.num_output_tokens, f"{type(exc).__name__}: {exc}")
            try:
                tracked.sink(failure)
            except Exception:
                logger.exception("could not report the failure of request %d", event.seq_id)
            return False

    def _forget(self, request_id: int) -> None:
        with self._lock:
            self._tracked.pop(request_id, None)

    def stalled_s(self) -> float:
        """0: TensorRT-LLM's executor runs its own loop, which this adapter cannot observe step by step."""
        return 0.0

    def stats(self) -> EngineStats | None:
        """The latest iteration's occupancy (None before the first iteration); refreshed by the awaiter."""
        return self._last_stats

    def _report_stats(self) -> None:
        try:
            iterations = self.executor.get_latest_iteration_stats()  # those since the previous call
            if not iterations:
                return
            with self._lock:
                tracked = len(self._tracked)
            stats = iteration_engine_stats(iterations[-1], tracked)
            if stats != self._last_stats:
                self._last_stats = stats
                if self.on_stats is not None:
                    self.on_stats(stats)
        except Exception:
            logger.exception("iteration stats failed")

    def shutdown(self, timeout: float = 10.0) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            left, self._tracked = self._tracked, {}
        for request_id, tracked in left.items():
            self._deliver(tracked, TokenEvent(request_id, (), FinishReason.CANCELLED, tracked.num_prompt_tokens,
                                              tracked.num_output_tokens))
        self.executor.shutdown()


def iteration_engine_stats(latest, tracked: int) -> EngineStats:
    """EngineStats from TensorRT-LLM's IterationStats (`tracked`: requests this adapter has not seen end)."""
    kv, ifb = latest.kv_cache_stats, latest.inflight_batching_stats
    kv_fields = {} if kv is None else dict(max_kv_blocks=kv.max_num_blocks, used_kv_blocks=kv.used_num_blocks,
                                           tokens_per_kv_block=kv.tokens_per_block,
                                           reused_kv_blocks=kv.reused_blocks, missed_kv_blocks=kv.missed_blocks)
    ifb_fields = {} if ifb is None else dict(
        scheduled=ifb.num_scheduled_requests, context=ifb.num_context_requests, context_tokens=ifb.num_ctx_tokens,
        paused=ifb.num_paused_requests, micro_batch_id=ifb.micro_batch_id)
    return EngineStats(running=latest.num_active_requests, waiting=max(0, tracked - latest.num_active_requests),
                       free_kv_blocks=kv.free_num_blocks if kv is not None else 0,
                       max_running=latest.max_num_active_requests, iteration=latest.iter,
                       timestamp_s=_unix_seconds(latest.timestamp), gpu_mem_bytes=latest.gpu_mem_usage,
                       cpu_mem_bytes=latest.cpu_mem_usage, pinned_mem_bytes=latest.pinned_mem_usage,
                       **kv_fields, **ifb_fields)


def _unix_seconds(timestamp: str) -> float | None:
    """IterationStats.timestamp is local time as "%m-%d-%Y %H:%M:%S.%f" (tensorrt_llm::common::
    getCurrentTimestamp); None when it cannot be read, so no time is made up."""
    try:
        return datetime.datetime.strptime(timestamp, "%m-%d-%Y %H:%M:%S.%f").timestamp()
    except (TypeError, ValueError):
        return None


def engine_world_size(engine_dir: Path) -> int:
    """GPUs the engine was built for, from trtllm-build's config.json (pretrained_config.mapping)."""
    config_file = engine_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{config_file} not found: not a TensorRT-LLM engine folder (python -m build.trtllm_engine)")
    mapping = json.loads(config_file.read_text()).get("pretrained_config", {}).get("mapping", {})
    return int(mapping.get("world_size", 1))


def start_executor_engine(folder: EngineFolder, on_stats=None) -> ExecutorEngine:
    import tensorrt_llm
    import tensorrt_llm.bindings.executor as trtllm  # present in NGC's trtllm container (or the tests' fake)

    if tensorrt_llm.__version__ != TENSORRT_LLM_VERSION:
        logger.warning("tensorrt_llm %s is installed; this runtime was written against %s (%s)",
                       tensorrt_llm.__version__, TENSORRT_LLM_VERSION, NGC_IMAGE)
    settings = load_executor_settings(folder.path)
    config = executor_config(trtllm, settings, engine_world_size(folder.path))
    executor = trtllm.Executor(str(folder.path), trtllm.ModelType.DECODER_ONLY, config)
    engine = ExecutorEngine(executor, trtllm, folder.config.limits, settings, on_stats=on_stats)
    engine.start()
    return engine
