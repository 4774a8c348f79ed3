"""python -m build.fill_templates --engine-dir engines/qwen-tiny [--output-dir DIR]: writes config.pbtxt files."""
import argparse

from qwen_triton.serving.model_params import RUNTIMES
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--engine-dir", required=True)
    p.add_argument("--model-repository", default="model_repository", help="folder holding the templates")
    p.add_argument("--output-dir", default=None, help="write the filled repository here (default: in place)")
    p.add_argument("--runtime", default=None, choices=RUNTIMES, help="default: torch")
    p.add_argument("--device", default=None, help="override the device: cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--dtype", default=None, help="override the engine dtype")
    p.add_argument("--cpu-threads", type=int, default=None,
                   help="torch threads for the torch runtime on CPU (default 0: the usable cores less one)")
    p.add_argument("--max-batch-size", type=int, default=None, help="default: the engine's max_batch_size")
    p.add_argument("--preprocessing-instance-count", type=int, default=None)
    p.add_argument("--postprocessing-instance-count", type=int, default=None)
    p.add_argument("--decoupled", default=None, choices=("true", "false"),
                   help="default true (streaming); false serves unary infer (gRPC ModelInfer, HTTP /infer)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    values = values_for_engine(
        args.engine_dir, runtime=args.runtime, device=args.device, dtype=args.dtype, cpu_threads=args.cpu_threads,
        max_batch_size=args.max_batch_size, preprocessing_instance_count=args.preprocessing_instance_count,
        postprocessing_instance_count=args.postprocessing_instance_count,
        decoupled=None if args.decoupled is None else args.decoupled == "true")
    for path in fill_repository(args.model_repository, values, args.output_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
