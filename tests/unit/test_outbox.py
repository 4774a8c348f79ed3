"""Outbox: one thread sends; streams with nothing sent go first; a stream posted while queued is sent once;
close() sends what was posted."""
import threading
import time

from qwen_triton.serving.outbox import CANCEL_POLL_S, Outbox


class Stream:
    """Flushes like a ResponseStream whose every send is a blocking round trip of `send_s`."""

    def __init__(self, name, log, send_s=0.01):
        self.name, self.log, self.send_s = name, log, send_s
        self.flushes, self.polls = 0, 0
        self.threads = set()

    def flush(self):
        self.threads.add(threading.get_ident())
        time.sleep(self.send_s)
        self.log.append(self.name)
        self.flushes += 1

    def poll(self):
        self.threads.add(threading.get_ident())
        self.polls += 1


def test_streams_with_nothing_sent_go_first():
    log = []
    box = Outbox()
    blocker, old, older, new = (Stream(n, log) for n in ("blocker", "old", "older", "new"))
    blocker.send_s = 0.1
    box.post(blocker)
    time.sleep(0.02)  # the thread is sending the blocker's response
    box.post(older)
    box.post(old)
    box.post(new, first=True)
    box.post(older)  # already queued: sent once
    box.close()
    assert log == ["blocker", "new", "older", "old"]


def test_sends_and_cancellation_polls_share_one_thread():
    log = []
    box = Outbox()
    streams = [Stream(f"s{i}", log) for i in range(3)]
    for stream in streams:
        box.register(stream)
        box.post(stream)
    time.sleep(3 * CANCEL_POLL_S)
    box.close()
    assert all(s.flushes == 1 and s.polls >= 1 for s in streams)
    assert len(set().union(*(s.threads for s in streams))) == 1  # Triton 2.51 aborts or hangs otherwise

