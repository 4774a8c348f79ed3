"""python -m build.make_random_checkpoint --flavour qwen|qwen2 --out DIR: a deterministic random-weight
Qwen checkpoint in Hugging Face layout (stand-in for real weights)."""
import argparse

from qwen_triton.tools.random_checkpoint import SIZES, make_random_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flavour", choices=["qwen", "qwen2"], default="qwen", help="qwen = Qwen-7B-Chat (v1) layout")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    path = make_random_checkpoint(args.out, args.flavour, args.seed, SIZES[args.size])
    print(f"wrote a random {args.size} {args.flavour} checkpoint to {path}")


if __name__ == "__main__":
    main()
