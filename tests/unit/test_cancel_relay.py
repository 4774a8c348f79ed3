"""postprocessing's cancel relay: asks whether a step is cancelled sparingly, and stops each request once."""
import numpy as np

from qwen_triton.serving.cancellation import CancelRelay


def test_cancel_relay_asks_each_key_at_most_every_check_period_and_stops_it_once():
    now, asked, stops = [0.0], [], []
    relay = CancelRelay(stops.append, check_s=0.1, clock=lambda: now[0])
    cancelled = {1: False, 2: True}

    def ask(key):
        return lambda: asked.append(key) or cancelled[key]

    assert not relay(1, ask(1)) and not relay(1, ask(1))  # a streamed chunk 0 s later: not asked again
    assert asked == [1]
    assert not relay(1, ask(1), probe=True) and asked == [1, 1]  # a probe is always asked
    cancelled[1] = True
    now[0] = 0.05
    assert not relay(1, ask(1))  # within the period
    now[0] = 0.2
    assert relay(1, ask(1)) and stops == [1]
    now[0] = 1.0
    assert not relay(1, ask(1), probe=True) and stops == [1]  # stopped once
    assert relay(2, ask(2)) and stops == [1, 2] and not relay(None, ask(2))


def test_the_step_of_a_last_chunk_is_not_asked_and_forgets_its_key():
    """A request's last chunk: it has ended in tensorrt_llm, so asking (a round trip to the server) could stop
    nothing. Its key is forgotten, so a later step naming it would be asked at once."""
    asked, stops = [], []
    relay = CancelRelay(stops.append, check_s=0.1, clock=lambda: 0.0)

    def ask(key, cancelled=True):  # cancelled: asking would send a stop
        return lambda: asked.append(key) or cancelled

    assert not relay(7, ask(7), final=True) and asked == [] and stops == []  # a 1-token request's only step
    assert not relay(8, ask(8, cancelled=False)) and asked == [8]  # asked at 0 s: not again within 0.1 s
    assert not relay(8, ask(8), final=True) and asked == [8]
    assert relay(8, ask(8)) and asked == [8, 8] and stops == [8]  # forgotten: asked at once


def test_postprocessing_tells_the_last_chunk_by_its_finish_reason():
    from qwen_triton.serving.postprocess import Postprocessor

    assert Postprocessor.ends_request({"finish_reason": np.asarray([b"length"], dtype=np.object_)})
    assert not Postprocessor.ends_request({"finish_reason": np.asarray([b""], dtype=np.object_)})
    assert not Postprocessor.ends_request({"request_key": np.asarray([3], dtype=np.uint64)})  # a probe
