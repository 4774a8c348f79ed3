"""KV read rate of the paged decode-attention kernel (one layer, Qwen-7B's 32 heads x 128, fp16, 16-token
blocks scattered over the cache) by batch, context and launch variant. Diagnostic; one JSON line each."""
from __future__ import annotations

import argparse
import itertools
import json

import torch

from ..models import paged_attention


def _time_ms(fn, iters: int = 50) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, nargs="+", default=[300, 1000, 2000])
    args = parser.parse_args(argv)
    H, D, bs = 32, 128, 16
    for B, ctx in itertools.product(args.batch, args.context):
        per_seq = -(-ctx // bs)
        blocks = B * per_seq
        k = torch.randn(blocks + 1, bs, H, D, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        tables = torch.randperm(blocks, device="cuda").view(B, per_seq)  # scattered, as after churn
        lens = torch.full((B,), ctx, device="cuda", dtype=torch.long)
        q = torch.randn(B, H, D, device="cuda", dtype=torch.float16)
        nbytes = 2 * B * ctx * H * D * 2
        ref = paged_attention.decode(q, k, v, tables, lens)
        for tile, warps in itertools.product((32, 64, 128), (2, 4, 8)):
            call = lambda: paged_attention.decode(q, k, v, tables, lens, launch=(tile, warps))  # noqa: E731
            err = (call().float() - ref.float()).abs().max().item()
            ms = _time_ms(call)
            print(json.dumps({"batch": B, "context": ctx, "tile": tile, "warps": warps,
                              "us": round(ms * 1000, 1), "tb_s": round(nbytes / ms / 1e9, 3), "err": err}), flush=True)


if __name__ == "__main__":
    main()
