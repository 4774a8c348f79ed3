"""A stalled engine is noticed: every open request gets an error naming the stall, then on_stall runs; an
engine that keeps stepping, or waits idle, is left alone."""
import threading
import time

from qwen_triton.config import EngineLimits
from qwen_triton.runtime.engine import Engine
from qwen_triton.runtime.sequence import SamplingParams
from qwen_triton.serving.watchdog import Watchdog

LIMITS = EngineLimits(max_batch_size=4, max_input_len=32, max_seq_len=64, max_num_batched_tokens=128, block_size=4)


class WedgingRunner:
    """Steps normally until `wedge` is set, then blocks inside execute() (a hung kernel)."""

    num_kv_blocks, block_size, mixed_prefill_tokens = 64, 4, 0

    def __init__(self):
        self.wedge, self.release = threading.Event(), threading.Event()

    def execute(self, schedule, feed=None):
        import torch

        if self.wedge.is_set():
            self.release.wait(30)
        out = torch.zeros(len(schedule.sequences), 151936)
        out[:, 7] = 1.0
        return out


def test_an_engine_that_stops_stepping_is_noticed_and_its_requests_fail():
    runner = WedgingRunner()
    engine = Engine(runner, LIMITS)
    engine.start()
    failed, stalled = [], threading.Event()
    watchdog = Watchdog(engine.stalled_s, failed.append, stalled.set, limit_s=0.3, period_s=0.05)
    try:
        done = threading.Event()
        engine.submit([1, 2], SamplingParams(max_tokens=2), lambda e: done.set() or True)
        assert done.wait(5) and not stalled.wait(0.6)  # idle after it: not a stall
        runner.wedge.set()
        engine.submit([1, 2], SamplingParams(max_tokens=40), lambda e: True)
        assert stalled.wait(5)
        assert len(failed) == 1 and "stalled" in str(failed[0])
    finally:
        watchdog.stop()
        runner.release.set()
        engine.shutdown()


def test_a_busy_engine_that_keeps_stepping_is_not_a_stall():
    engine = Engine(WedgingRunner(), LIMITS)
    engine.start()
    stalled = threading.Event()
    watchdog = Watchdog(engine.stalled_s, lambda exc: None, stalled.set, limit_s=0.2, period_s=0.02)
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            engine.submit([1], SamplingParams(max_tokens=50), lambda e: True)
            time.sleep(0.05)
        assert not stalled.is_set()
    finally:
        watchdog.stop()
        engine.shutdown()
