"""Token ids of one response -> text. Stateless: the tensorrt_llm model only releases chunks that end
on a UTF-8 boundary with stop strings already cut, so each chunk decodes on its own."""
from __future__ import annotations

import numpy as np

from ..text.tokenizer import QwenTokenizer


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
