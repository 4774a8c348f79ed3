"""`python -m benchmarks.openai_frontend`: what the OpenAI frontend costs. On one engine and one tritonserver it
runs benchmarks.gpu's steady-window load (ShareGPT-like lengths, raw prompts of n " the", greedy, several client
processes) alternately straight to Triton over gRPC and through the OpenAI server (SSE /v1/completions,
benchmarks.openai_load; the server a child process against the same Triton, on a free port), at each
concurrency `--rounds` times (grpc, openai, grpc, openai), and writes every run, the medians, openai/grpc of
output tok/s and the difference of TTFT p50. Measures and records; asserts nothing."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from qwen_triton.openai_server.process import OpenAIServerProcess
from qwen_triton.serving.launcher import Ports, TritonServer, free_ports
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

from .checkout import MODEL_REPOSITORY, ROOT
from .load_generator import Job, result_dict, run_jobs, run_steady_window
from .openai_load import run_sse_jobs, run_sse_steady_window
from .sharegpt import LENGTHS, load_lengths

TINY_ENGINE = ROOT / "engines" / "qwen-tiny"
TRANSPORTS = ("grpc", "openai")


@dataclasses.dataclass(frozen=True)
class LoadShape:
    warmup_s: float
    window_s: float
    processes: int
    max_tokens_cap: int | None  # None: each job's own max_tokens from the lengths file


def default_shape(device: str) -> LoadShape:
    """The GPU: benchmarks.gpu's c64 exactly. The CPU (2 cores shared by server, frontend and clients): shorter,
    with outputs capped, so that a run of 2 rounds at two concurrencies ends within minutes."""
    from .gpu import C64_WARMUP_S, C64_WINDOW_S, CLIENT_PROCESSES

    if device == "cuda":
        return LoadShape(C64_WARMUP_S, C64_WINDOW_S, CLIENT_PROCESSES, None)
    return LoadShape(3.0, 10.0, 2, 32)


def machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor() or platform.machine()


def shown(path: Path) -> str:
    """A path as the JSON records it: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def make_engine(args, work: Path) -> Path:
    if not args.random_7b:
        return args.engine
    from qwen_triton.tools.random_checkpoint import QWEN_7B
    from qwen_triton.tools.random_engine import make_random_engine

    from .gpu import LIMITS

    engine_dir = work / "engine"
    make_random_engine(engine_dir, QWEN_7B, LIMITS, seed=0)  # benchmarks.gpu's engine: weights made on load
    return engine_dir


def triton_server(engine_dir: Path, device: str, work: Path) -> TritonServer:
    # On the GPU the repository benchmarks.gpu serves from; on the CPU the tests' (one instance each).
    counts = {"preprocessing_instance_count": 2, "postprocessing_instance_count": 4} if device == "cuda" else {}
    repo = work / "repo"
    fill_repository(MODEL_REPOSITORY, values_for_engine(engine_dir, device=device, **counts), repo)
    return TritonServer(repo, Ports.free(), log_file=work / "tritonserver.log", exit_timeout_s=5)


def jobs_from(lengths: Path, cap: int | None) -> list[Job]:
    from .gpu import WORD

    return [Job(WORD * i, min(o, cap) if cap else o, True) for i, o in load_lengths(lengths)]


def warm_up(grpc_url: str, openai_url: str) -> None:
    """Both paths once before any timed run: the first requests pay for connections and lazy set-up."""
    from .gpu import WORD

    jobs = [Job(WORD * 64, 16, True)] * 8
    run_jobs(grpc_url, 4, jobs)
    run_sse_jobs(openai_url, 4, jobs)


def one_run(transport: str, url: str, concurrency: int, jobs: list[Job], shape: LoadShape) -> dict:
    run = run_steady_window if transport == "grpc" else run_sse_steady_window
    began = time.perf_counter()
    result = run(url, concurrency, jobs, shape.warmup_s, shape.window_s, processes=shape.processes)
    return {"transport": transport, **result_dict(result), "wall_s": round(time.perf_counter() - began, 1),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def measure(urls: dict[str, str], concurrencies: list[int], rounds: int, jobs: list[Job],
            shape: LoadShape) -> list[dict]:
    runs = []
    for concurrency in concurrencies:
        for round_ in range(rounds):
            for transport in TRANSPORTS:
                run = {"round": round_, **one_run(transport, urls[transport], concurrency, jobs, shape)}
                print(json.dumps(run), flush=True)
                runs.append(run)
    return runs


def medians(runs: list[dict], concurrencies: list[int]) -> dict:
    """Per concurrency: each transport's medians, openai/grpc of output tok/s, openai - grpc of TTFT p50."""
    out = {}
    for c in concurrencies:
        per = {}
        for transport in TRANSPORTS:
            mine = [r for r in runs if r["concurrency"] == c and r["transport"] == transport]
            per[transport] = {key: round(statistics.median(r[key] for r in mine), 2)
                              for key in ("output_tok_s", "ttft_ms_p50", "itl_ms_mean", "latency_ms_p50")}
            per[transport]["failed"] = sum(r["failed"] for r in mine)
        ratio = per["openai"]["output_tok_s"] / per["grpc"]["output_tok_s"] if per["grpc"]["output_tok_s"] else None
        out[f"c{c}"] = {**per, "ratio_output_tok_s_openai_over_grpc": round(ratio, 4) if ratio else None,
                        "frontend_cost_pct": round(100 * (1 - ratio), 2) if ratio else None,
                        "ttft_p50_diff_ms_openai_minus_grpc":
                            round(per["openai"]["ttft_ms_p50"] - per["grpc"]["ttft_ms_p50"], 2)}
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openai_frontend", description=__doc__)
    engine = parser.add_mutually_exclusive_group()
    engine.add_argument("--engine", type=Path, default=TINY_ENGINE, help="an existing engine folder "
                        "(default: the CPU tiny engine engines/qwen-tiny)")
    engine.add_argument("--random-7b", action="store_true",
                        help="make benchmarks.gpu's random Qwen-7B-shape engine and serve it on the GPU")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="where the engine runs (default: cuda with --random-7b, else cpu)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each transport per concurrency")
    parser.add_argument("--warmup-s", type=float, help="default: 5 on the GPU (benchmarks.gpu), 3 on the CPU")
    parser.add_argument("--window-s", type=float, help="default: 20 on the GPU (benchmarks.gpu), 10 on the CPU")
    parser.add_argument("--processes", type=int, help="client processes (default: 8 on the GPU, 2 on the CPU)")
    parser.add_argument("--max-tokens-cap", type=int, help="cap every job's max_tokens (default: none on the "
                        "GPU, 32 on the CPU); 0: no cap")
    parser.add_argument("--lengths", type=Path, default=LENGTHS)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    return parser


def _shape(args, device: str) -> LoadShape:
    base = default_shape(device)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    cap = pick(args.max_tokens_cap, base.max_tokens_cap)
    return LoadShape(pick(args.warmup_s, base.warmup_s), pick(args.window_s, base.window_s),
                     pick(args.processes, base.processes), cap or None)


def record(args, device: str, shape: LoadShape, runs: list[dict], load_at_start: list[float],
           wall_s: float, argv: list[str] | None) -> dict:
    return {
        "machine": machine(device), "device": device, "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.openai_frontend " + " ".join(sys.argv[1:] if argv is None else argv),
        "engine": "random weights, Qwen-7B shape (benchmarks.gpu)" if args.random_7b else shown(args.engine),
        "load": {**dataclasses.asdict(shape), "lengths": shown(args.lengths), "sampling": "greedy",
                 "prompts": "n ' the' tokens, raw (apply_chat_template false on gRPC; /v1/completions on SSE)",
                 "rounds": args.rounds, "order": "per concurrency, per round: grpc then openai",
                 "sse_token_count": "usage.completion_tokens per request, spread over its text chunks by "
                                    "UTF-8 bytes (benchmarks/openai_load.py)"},
        "summary": medians(runs, args.concurrency), "runs": runs,
        "load_avg_at_start": load_at_start, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = args.device or ("cuda" if args.random_7b else "cpu")
    shape = _shape(args, device)
    work = Path(tempfile.mkdtemp(prefix="qwen-openai-bench-"))
    began, load_at_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    engine_dir = make_engine(args, work)
    jobs = jobs_from(args.lengths, shape.max_tokens_cap)
    with triton_server(engine_dir, device, work) as triton:
        grpc_url = f"127.0.0.1:{triton.ports.grpc}"
        with OpenAIServerProcess(grpc_url, port=free_ports(1)[0], log_file=work / "openai_server.log") as frontend:
            urls = {"grpc": grpc_url, "openai": frontend.base_url}
            warm_up(grpc_url, frontend.base_url)
            runs = measure(urls, args.concurrency, args.rounds, jobs, shape)
    # After the servers: the GPU's name initialises CUDA in this process, which must not take the server's memory.
    result = record(args, device, shape, runs, load_at_start, time.perf_counter() - began, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
