"""KV read rate of the paged decode-attention kernel (one layer, Qwen-7B's 32 heads x 128, fp16, 16-token
blocks scattered over the cache) by batch, context and launch variant. Diagnostic; one JSON line each."""
from __future__ import annotations

import argparse
import itertools
import json

import torch

from ..models import paged_attention
from .timing import graph_ms


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, nargs="+", default=[300, 1000, 2000])
    parser.add_argument("--splits", type=int, nargs="+", default=[0], help="programs per (sequence, head); 0: auto")
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--warps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--min-bytes", type=int, default=256 << 20, help="cache copies per case (beyond the L2)")
    args = parser.parse_args(argv)
    H, D, bs = 32, 128, 16
    for B, ctx in itertools.product(args.batch, args.context):
        per_seq = -(-ctx // bs)
        blocks = B * per_seq
        nbytes = 2 * B * ctx * H * D * 2
        # Each call reads its own cache (more copies than the L2 holds), as each layer does.
        caches = [(torch.randn(blocks + 1, bs, H, D, device="cuda", dtype=torch.float16),
                   torch.randn(blocks + 1, bs, H, D, device="cuda", dtype=torch.float16))
                  for _ in range(max(2, -(-args.min_bytes // nbytes)))]
        tables = torch.randperm(blocks, device="cuda").view(B, per_seq)  # scattered, as after churn
        lens = torch.full((B,), ctx, device="cuda", dtype=torch.long)
        q = torch.randn(B, H, D, device="cuda", dtype=torch.float16)
        ref = paged_attention.decode(q, *caches[0], tables, lens)
        for splits, tile, warps in itertools.product(args.splits, args.tiles, args.warps):
            calls = [lambda k=k, v=v: paged_attention.decode(q, k, v, tables, lens, splits or None, (tile, warps))
                     for k, v in caches]
            err = (calls[0]().float() - ref.float()).abs().max().item()
            ms = graph_ms(calls)
            print(json.dumps({"batch": B, "context": ctx, "splits": splits, "tile": tile, "warps": warps,
                              "us": round(ms * 1000, 1), "tb_s": round(nbytes / ms / 1e9, 3), "err": err}), flush=True)


if __name__ == "__main__":
    main()
