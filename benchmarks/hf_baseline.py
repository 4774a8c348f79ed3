"""The transformers baseline: Qwen2ForCausalLM with random weights in the engine's exact shape, fp16,
greedy `generate`, output tokens/s at given batch sizes. Run in its own process so its memory is freed."""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_triton.config import load_engine_folder


def hf_tokens_per_s(model, batch: int, prompt_len: int, new_tokens: int) -> float:
    ids = torch.randint(100, 50000, (batch, prompt_len), device="cuda")
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    model.generate(ids[:, :8], **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    return batch * (out.shape[1] - prompt_len) / (time.perf_counter() - start)  # output tokens only


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine-dir", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    m = load_engine_folder(args.engine_dir).config.model
    config = Qwen2Config(vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                         num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                         num_key_value_heads=m.num_key_value_heads, rms_norm_eps=m.rms_norm_eps,
                         rope_theta=m.rope_theta, max_position_embeddings=m.max_position_embeddings,
                         tie_word_embeddings=m.tie_word_embeddings)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.float16).eval()
    result = {f"hf_bs{b}_tok_s": round(hf_tokens_per_s(model, b, args.prompt_len, args.new_tokens), 2)
              for b in args.batch}
    result["hf_setup"] = (f"transformers {__import__('transformers').__version__} generate, fp16, greedy, "
                          f"{args.prompt_len}-token prompt, {args.new_tokens} new tokens")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
