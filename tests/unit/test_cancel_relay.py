"""postprocessing's cancel relay: asks whether a step is cancelled sparingly, and stops each request once."""
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
