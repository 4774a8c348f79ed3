"""return_log_probs for one request: which log-probabilities go with the ids a response releases.

The detokenizer holds ids back (an incomplete UTF-8 character, a possible stop string) and may drop some (a stop
string is cut), so the log-probabilities wait in the same order until their ids are released. Engine thread only.
"""
from __future__ import annotations

from collections import deque


class TokenLogProbs:
    def __init__(self):
        self.cumulative = 0.0  # every sampled token's, the stop token included (a sequence score)
        self._held: deque[float] = deque()  # of ids pushed to the detokenizer and not released yet

    def sampled(self, logprob: float) -> None:
        self.cumulative += logprob

    def pushed(self, logprob: float) -> None:
        self._held.append(logprob)

    def released(self, count: int) -> list[float]:
        """The log-probabilities of the next `count` released ids (ids echoed from the prompt have none)."""
        return [self._held.popleft() for _ in range(min(count, len(self._held)))]
