"""Qwen vocabulary facts shared by text handling and the runtime (no imports, no state)."""

NUM_BPE_RANKS = 151643  # entries in qwen.tiktoken
ENDOFTEXT_ID = 151643  # <|endoftext|>: eos, terminal
IM_START_ID = 151644  # <|im_start|>
IM_END_ID = 151645  # <|im_end|>: end of a ChatML turn
FIRST_EXTRA_ID = 151646  # <|extra_0|> .. <|extra_204|>
NUM_TOKENIZER_IDS = 151851  # ids >= this are embedding padding: never sampled
PADDED_VOCAB_SIZE = 151936
STOP_TOKEN_IDS = (IM_END_ID, IM_START_ID, ENDOFTEXT_ID)
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
