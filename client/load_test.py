"""python -m client.load_test: streaming load against the ensemble (output tokens/s, TTFT, ITL;
benchmarks/load_generator.py) and a perf_analyzer run with an explicit --input-data file
(benchmarks/perf_analyzer.py). Prints JSON; --out also writes it."""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.load_generator import result_dict, run_streaming_load
from benchmarks.perf_analyzer import run_perf_analyzer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=f"127.0.0.1:{os.environ.get('GRPC_PORT', 8001)}")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests-per-worker", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sampling", choices=["greedy", "engine-default"], default="greedy",
                        help="engine-default: the checkpoint's generation_config (top-p over a random model's flat "
                             "distribution is the worst case for the sampler)")
    parser.add_argument("--processes", type=int, default=1,
                        help="client processes sharing the concurrency (one Python process caps the response rate)")
    parser.add_argument("--perf-analyzer", action="store_true", help="also run perf_analyzer at each concurrency")
    parser.add_argument("--perf-window-ms", type=int, default=20000,
                        help="perf_analyzer measurement window; must hold several whole requests")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = {"command": "python -m client.load_test " + " ".join(sys.argv[1:] if argv is None else argv),
               "url": args.url, "max_tokens": args.max_tokens, "sampling": args.sampling,
               "streaming_load": [], "perf_analyzer": []}
    for concurrency in args.concurrency:
        load = run_streaming_load(args.url, concurrency, args.requests_per_worker, args.max_tokens,
                                  greedy=args.sampling == "greedy", processes=args.processes)
        results["streaming_load"].append(result_dict(load))
        print(json.dumps(result_dict(load)), flush=True)
        if args.perf_analyzer:
            with tempfile.TemporaryDirectory() as tmp:
                perf = run_perf_analyzer(args.url, Path(tmp), concurrency, args.max_tokens,
                                         measurement_ms=args.perf_window_ms, greedy=args.sampling == "greedy")
            print(perf.pop("stdout_tail"), flush=True)
            results["perf_analyzer"].append({"concurrency": concurrency, **perf})
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
