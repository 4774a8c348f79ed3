"""qwen.tiktoken -> a Hugging Face tokenizer folder (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
so GenAI-Perf and transformers.AutoTokenizer count and produce the same ids as QwenTokenizer. Plain JSON: the
`tokenizers` library is not needed to write it.

Known, deliberate differences from our serving path (tests pin them):
- Special-token strings typed in text ("<|im_end|>") become control ids in AutoTokenizer, as in every HF
  tokenizer; QwenTokenizer keeps them text. `tokenizer(text, split_special_tokens=True)` matches ours.
- The chat template cannot NFC-normalise, trim history to the window, nor encode the role and content apart:
  content that starts with whitespace holding a newline ("\\n...") fuses with the "\\n" after the role."""
from __future__ import annotations

import json
from pathlib import Path

from ..vocab import NUM_BPE_RANKS
from .chat_template import DEFAULT_SYSTEM_PROMPT
from .tokenizer import PAT_STR, SPECIAL_TOKENS, QwenTokenizer

HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# ChatML exactly as chat_template.build_prompt lays it out: the system turn always comes first (the first
# message's content when it is a system message, else the server's default), turns are joined by "\n" with no
# newline after the last <|im_end|>, and the generation prompt is "\n<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = " + json.dumps(DEFAULT_SYSTEM_PROMPT) + " -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>' -}}"
    "{%- for message in turns -%}"
    "{{- '\\n<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\\n<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def byte_alphabet() -> list[str]:
    """GPT-2's byte -> character table that byte-level BPE files spell tokens in: printable Latin-1 bytes stand
    for themselves, the 68 others (controls, space, NBSP, soft hyphen) move in order to U+0100.., so no token
    string holds whitespace and "a b" can name a merge."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, moved = [], 0
    for byte in range(256):
        if byte in printable:
            table.append(chr(byte))
        else:
            table.append(chr(0x100 + moved))
            moved += 1
    return table


def _last_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    """The two parts tiktoken joins last when it builds `token` from its bytes, or None if it never can.
    Any pair tiktoken ever joins into `token` is this one (the bytes under a pair evolve as they would alone),
    so one merge per token, listed in rank order, makes HF's BPE take tiktoken's steps exactly."""
    parts = [token[i:i + 1] for i in range(len(token))]
    get = ranks.get
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = get(parts[i] + parts[i + 1])
            if rank is not None and (best is None or rank < best):  # ties: the leftmost, as tiktoken
                best, at = rank, i
        if best is None:
            return None
        if len(parts) == 2:
            return parts[0], parts[1]
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return None


def bpe_model(tokenizer: QwenTokenizer) -> dict:
    """The `tokenizers` BPE model: vocab and merges in byte-level spelling. Every token of the verified
    qwen.tiktoken is buildable from its bytes, so BPE alone reproduces tiktoken's whole-piece lookups too
    (no `ignore_merges`, which tokenizers < 0.19 does not know)."""
    ranks = {tokenizer.token_bytes(i): i for i in range(NUM_BPE_RANKS)}
    table = byte_alphabet()

    def spell(token: bytes) -> str:
        return "".join(table[b] for b in token)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        parts = _last_merge(token, ranks) if len(token) > 1 else None
        if parts is not None:
            merges.append(f"{spell(parts[0])} {spell(parts[1])}")
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": {spell(token): rank for token, rank in ranks.items()}, "merges": merges}


def tokenizer_json(tokenizer: QwenTokenizer) -> dict:
    # tiktoken splits text with PAT_STR first; ByteLevel must then only re-spell bytes (use_regex=False),
    # or GPT-2's own regex would split the pieces again.
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for name, i in sorted(SPECIAL_TOKENS.items(), key=lambda x: x[1])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PAT_STR}, "behavior": "Isolated", "invert": False},
                byte_level]},
            "post_processor": None, "decoder": byte_level, "model": bpe_model(tokenizer)}


def tokenizer_config(max_input_len: int | None) -> dict:
    # eos is <|im_end|>, which ends a ChatML turn (vocab.STOP_TOKEN_IDS); <|endoftext|> pads, as in Qwen's
    # own configs. No BOS: Qwen prompts start with <|im_start|> from the template, never an added token.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "split_special_tokens": False, "chat_template": CHAT_TEMPLATE}
    if max_input_len is not None:  # the engine refuses longer prompts
        config["model_max_length"] = max_input_len
    return config


# read_ranks admits one vocab only (by sha256), so tokenizer.json is the same text for every engine: built once
# per process, so repeated conversions (tests, sweeps) do not each pay the ~1 s of merges and JSON.
_json_text: list[str] = []


def write_hf_tokenizer(folder: str | Path, tokenizer: QwenTokenizer | None = None,
                       max_input_len: int | None = None) -> None:
    """Writes HF_FILES into `folder`; `tokenizer` defaults to the folder's qwen.tiktoken (or the packaged one)."""
    folder = Path(folder)
    if not _json_text:
        # ensure_ascii=False: byte-level spellings stay one character each instead of \uXXXX escapes.
        _json_text.append(json.dumps(tokenizer_json(tokenizer or QwenTokenizer.load(folder)), ensure_ascii=False))
    (folder / "tokenizer.json").write_text(_json_text[0], encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(max_input_len), indent=2) + "\n")
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
