"""python -m build.make_random_checkpoint --flavour qwen|qwen2 --seed 0 --out DIR: a deterministic random-weight
Qwen checkpoint in Hugging Face layout (the stand-in for real weights)."""
import argparse

from qwen_triton.tools.random_checkpoint import FLAVOURS, SIZES, make_random_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flavour", choices=FLAVOURS, default="qwen", help="qwen = Qwen-7B-Chat (v1) layout")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="qwen7b needs ~30 GB RAM and disk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    path = make_random_checkpoint(args.out, args.flavour, args.seed, SIZES[args.size])
    print(f"wrote a random {args.size} {args.flavour} checkpoint (seed {args.seed}) to {path}")


if __name__ == "__main__":
    main()
