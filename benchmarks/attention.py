"""KV read rate of the paged decode-attention kernel (one layer, Qwen-7B's 32 heads x 128, fp16, 16-token
blocks scattered over the cache) by batch, context and launch variant. Diagnostic; one JSON line each.
--served: each batch's contexts drawn as a served c64 step sees them (ShareGPT-like lengths, each running
request somewhere in its output), instead of one context for all; "context" then reports their mean."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random

import torch

from qwen_triton.models import paged_attention

from .sharegpt import LENGTHS, load_lengths
from .timing import graph_ms


def served_contexts(batch: int, seed: int = 0) -> list[int]:
    """Contexts of `batch` running requests: a request is running in proportion to its output length, at a
    uniformly drawn point of it."""
    rng, lengths = random.Random(seed), load_lengths(LENGTHS)
    picks = rng.choices(lengths, weights=[out for _, out in lengths], k=batch)
    return [prompt + rng.randrange(out) + 1 for prompt, out in picks]


def _launches(args, batch: int, heads: int, table_tokens: int) -> list:
    default = paged_attention.default_launch(batch, heads, table_tokens, torch.device("cuda"))
    launches = []
    for splits, tile, warps, chunk, stages in itertools.product(args.splits, args.tiles, args.warps, args.chunks,
                                                                args.stages):
        if not splits:
            launch = default
        elif chunk:
            launch = paged_attention.Launch(-(-table_tokens // (tile * chunk)), tile, warps, chunk, stages)
        else:
            launch = paged_attention.Launch(splits, tile, warps, stages=stages)
        if launch not in launches:  # the default once, however many tiles and warps were asked for
            launches.append(launch)
    return launches


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, nargs="+", default=[300, 1000, 2000])
    parser.add_argument("--splits", type=int, nargs="+", default=[0],
                        help="programs per (sequence, head); 0: the default launch (the other launch options ignored)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--warps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--chunks", type=int, nargs="+", default=[0],
                        help="at most this many tiles per program (the grid covers the longest table); 0: even splits")
    parser.add_argument("--stages", type=int, nargs="+", default=[2], help="tile-loop pipeline depth (1: none)")
    parser.add_argument("--served", action="store_true", help="contexts as under the served c64 load")
    parser.add_argument("--table-tokens", type=int, default=2048, help="block table width (max_seq_len in serving)")
    parser.add_argument("--min-bytes", type=int, default=256 << 20, help="cache copies per case (beyond the L2)")
    args = parser.parse_args(argv)
    H, D, bs = 32, 128, 16
    for B, ctx in itertools.product(args.batch, [0] if args.served else args.context):
        contexts = served_contexts(B) if args.served else [ctx] * B
        ctx = round(sum(contexts) / B)
        per_seq = -(-max(*contexts, args.table_tokens) // bs)
        blocks = B * per_seq
        nbytes = 2 * sum(contexts) * H * D * 2
        # Each call reads its own cache (more copies than the L2 holds), as each layer does.
        caches = [(torch.randn(blocks + 1, bs, H, D, device="cuda", dtype=torch.float16),
                   torch.randn(blocks + 1, bs, H, D, device="cuda", dtype=torch.float16))
                  for _ in range(max(2, -(-args.min_bytes // nbytes)))]
        tables = torch.randperm(blocks, device="cuda").view(B, per_seq)  # scattered, as after churn
        lens = torch.tensor(contexts, device="cuda", dtype=torch.long)
        q = torch.randn(B, H, D, device="cuda", dtype=torch.float16)
        ref = paged_attention.decode(q, *caches[0], tables, lens, paged_attention.Launch(1, 128, 2))
        for launch in _launches(args, B, H, per_seq * bs):
            calls = [lambda k=k, v=v: paged_attention.decode(q, k, v, tables, lens, launch) for k, v in caches]
            err = (calls[0]().float() - ref.float()).abs().max().item()
            ms = graph_ms(calls)
            print(json.dumps({"batch": B, "context": ctx, "max_context": max(contexts), **dataclasses.asdict(launch),
                              "us": round(ms * 1000, 1), "tb_s": round(nbytes / ms / 1e9, 3), "err": err}), flush=True)


if __name__ == "__main__":
    main()
