"""The fake executor's loop: in-flight batching of scripted tokens, one token per active request per step."""
from __future__ import annotations

import datetime
import math
import threading
import time
from collections import deque

from ._types import InflightBatchingStats, IterationStats, KvCacheStats, Response, Result, _Active


class ScriptedExecutorLoop:
    def __init__(self, build: dict, config, script: dict):
        self.max_batch_size = build["max_batch_size"]
        self.max_input_len = build["max_input_len"]
        self.tokens_per_block = build.get("plugin_config", {}).get("tokens_per_block", 64)
        self.max_blocks = self.max_batch_size * math.ceil(build["max_seq_len"] / self.tokens_per_block)
        self.script = script.get("tokens")
        self.step_s = script.get("step_ms", 1) / 1000
        self.max_stats = config.iter_stats_max_iterations
        self.waiting: deque[_Active] = deque()
        self.active: dict[int, _Active] = {}
        self.cancelled: set[int] = set()
        self.responses: deque[Response] = deque()
        self.stats: deque[IterationStats] = deque(maxlen=self.max_stats)
        self.iteration = 0
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, item: _Active) -> None:
        with self.cond:
            self.waiting.append(item)
            self.cond.notify_all()

    def cancel(self, request_id: int) -> None:
        with self.cond:
            self.cancelled.add(request_id)

    def take(self, request_id, timeout_s):
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.cond:
            while not self.responses and self.running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.cond.wait(left)
            if request_id is None:
                out, self.responses = list(self.responses), deque()
                return out
            out = [r for r in self.responses if r.request_id == request_id]
            self.responses = deque(r for r in self.responses if r.request_id != request_id)
            return out

    def take_stats(self):
        with self.cond:
            out, self.stats = list(self.stats), deque(maxlen=self.max_stats)
            return out

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()
        self.thread.join(5)

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.running and not self.waiting and not self.active:
                    self.cond.wait(0.05)
                if not self.running:
                    return
                self._step()
                self.cond.notify_all()
            time.sleep(self.step_s)

    def _step(self) -> None:
        context = []  # admitted this step: their context phase (the whole prompt) runs now
        while self.waiting and len(self.active) < self.max_batch_size:
            item = self.waiting.popleft()
            if len(item.request.input_token_ids) > self.max_input_len:
                self.responses.append(Response(item.request_id, error_msg=(
                    f"[TensorRT-LLM][ERROR] Assertion failed: input length "
                    f"({len(item.request.input_token_ids)}) exceeds max_input_len ({self.max_input_len})")))
                continue
            self.active[item.request_id] = item
            context.append(item)
        scheduled = sum(1 for request_id in self.active if request_id not in self.cancelled)
        context = [item for item in context if item.request_id not in self.cancelled]  # ended, not run
        for request_id, item in list(self.active.items()):
            if request_id in self.cancelled:
                self._finish(item, [])
            else:
                self._advance(item)
        self.iteration += 1
        used = sum(math.ceil((len(i.request.input_token_ids) + len(i.output)) / self.tokens_per_block)
                   for i in self.active.values())
        self.stats.append(IterationStats(
            # As tensorrt_llm::common::getCurrentTimestamp: local time, microseconds after the dot.
            timestamp=datetime.datetime.now().strftime("%m-%d-%Y %H:%M:%S.%f"), iter=self.iteration,
            num_active_requests=len(self.active), max_num_active_requests=self.max_batch_size,
            kv_cache_stats=KvCacheStats(self.max_blocks, self.max_blocks - used, used, self.tokens_per_block),
            inflight_batching_stats=InflightBatchingStats(
                scheduled, len(context), scheduled - len(context),
                num_ctx_tokens=sum(len(item.request.input_token_ids) for item in context))))

    def _next_token(self, item: _Active) -> int:
        source = self.script if self.script is not None else item.request.input_token_ids
        return source[len(item.output) % len(source)]

    def _advance(self, item: _Active) -> None:
        request, token = item.request, self._next_token(item)
        if token == request.end_id:  # the end token is not returned
            self._finish(item, [])
            return
        item.output.append(token)
        stopped = any(word and item.output[-len(word):] == list(word) for word in (request.stop_words or []))
        if stopped or len(item.output) >= request.max_tokens:
            self._finish(item, [token])
        elif request.streaming:
            self.responses.append(Response(item.request_id, result=self._result(item, False, [token])))

    def _finish(self, item: _Active, new_tokens: list[int]) -> None:
        del self.active[item.request_id]
        self.cancelled.discard(item.request_id)
        tokens = new_tokens if item.request.streaming else item.output
        if not item.request.output_config.exclude_input_from_output and not item.request.streaming:
            tokens = item.request.input_token_ids + tokens
        self.responses.append(Response(item.request_id, result=self._result(item, True, tokens)))

    @staticmethod
    def _result(item: _Active, final: bool, tokens: list[int]) -> Result:
        """With return_log_probs, log_probs[beam] goes with output_token_ids[beam] (a scripted value per token,
        -0.25 times its position in the output) and cum_log_probs[beam] sums all so far."""
        if not item.request.output_config.return_log_probs:
            return Result(final, [tokens])
        generated = len(item.output)
        values = [-0.25 * (generated - len(tokens) + i + 1) for i in range(len(tokens))]
        return Result(final, [tokens], cum_log_probs=[-0.25 * generated * (generated + 1) / 2], log_probs=[values])
