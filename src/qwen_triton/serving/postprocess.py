"""Token ids of one response -> text. Stateless: the tensorrt_llm model only releases chunks that end
on a UTF-8 boundary with stop strings already cut, so each chunk decodes on its own."""
from __future__ import annotations

import numpy as np

from ..schema import INDEX_OUTPUTS, LOGPROB_OUTPUTS, STATS_OUTPUTS
from ..text.tokenizer import QwenTokenizer

# tensorrt_llm's outputs that go on to the ensemble's unchanged: the counts, log-probabilities and indices.
PASSED_THROUGH = tuple(t.name for t in (*STATS_OUTPUTS[1:], *LOGPROB_OUTPUTS, *INDEX_OUTPUTS))


class Postprocessor:
    def __init__(self, tokenizer: QwenTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, tokens: np.ndarray, sequence_length: int | None = None) -> dict[str, np.ndarray]:
        ids = np.asarray(tokens).reshape(-1)
        if sequence_length is not None:
            ids = ids[:sequence_length]
        # decode() skips every id >= 151643: eos, <|im_start|>, <|im_end|>, extras, padding.
        text = self.tokenizer.decode(ids.tolist())
        return {"text_output": np.asarray([text.encode("utf-8")], dtype=np.object_)}

    @staticmethod
    def ends_request(values: dict[str, np.ndarray]) -> bool:
        """Whether this step carries the request's last chunk (tensorrt_llm sets finish_reason only there)."""
        finish = values.get("finish_reason")
        return finish is not None and np.asarray(finish).reshape(-1)[0] not in (b"", "")

    def chunk(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """One postprocessing step's inputs -> its outputs (text, the counts passed through); None for a
        cancellation probe, which carries no token ids."""
        tokens = values.get("tokens_batch")
        if tokens is None:
            return None
        text = values.get("text")
        if text is not None:  # tensorrt_llm decoded these ids already; a token is decoded once
            outputs = {"text_output": np.asarray(text, dtype=np.object_).reshape(1)}
        else:
            length = values.get("sequence_length")
            outputs = self(tokens, None if length is None else int(np.asarray(length).reshape(-1)[0]))
        finish = values.get("finish_reason")
        if finish is not None:
            outputs["finish_reason"] = np.asarray(finish, dtype=np.object_).reshape(1)  # [1], like text_output
        for name in PASSED_THROUGH:
            if name in values:
                outputs[name] = np.asarray(values[name])  # batch dim removed by read_inputs; added back
        return outputs
