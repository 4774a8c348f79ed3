"""One-command GPU benchmark: the GPU and fidelity test suites, a random Qwen-7B-shape engine made on the
device, the transformers baseline, then the real Triton ensemble (gRPC streaming) at concurrency 1 and 64, then
the same for each quantized mode, int8, int4 and fp8 (benchmarks/quant_gpu.py); writes benchmarks/results/<gpu>.json.
Measures and records; asserts nothing."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from client.server_metrics import gauge, histogram, histogram_delta_ms, scrape
from qwen_triton.config import EngineLimits
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.serving.responses import FIRST_RESPONSE_METRIC
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .checkout import MODEL_REPOSITORY, RESULTS, run_module
from . import quant_gpu
from .gpu_tests import run_suites
from .load_generator import Job, result_dict, run_jobs, run_steady_window, ttft_samples_ms, with_triton_stats
from .sharegpt import LENGTHS, load_lengths

CLIENT_PROCESSES = 8  # the c64 load comes from 8 processes x 8 streams (one Python process saturates first)
WORD = " the"  # one Qwen token, so a prompt of n words is n tokens with apply_chat_template false
C64_WARMUP_S, C64_WINDOW_S = 5.0, 20.0  # c64 throughput: output tokens arriving in the window, 64 in flight
HF_PROMPT_LEN, HF_NEW_TOKENS = 32, 128  # passed to benchmarks.hf_baseline and served alike (bs32_like_hf)
BS1_JOB = Job(WORD * 32, 256, True)  # batch-1 decode: 256 tokens after a 32-token prompt
TTFT_JOB = Job(WORD * 512, 1, True)  # time to first token of a 512-token prompt
LIMITS = EngineLimits(dtype="float16", max_batch_size=64, max_input_len=1024, max_seq_len=2048,
                      max_num_batched_tokens=8192, block_size=16)


def copy_bandwidth_gbs(n_bytes: int = 2 << 30) -> float:
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * n_bytes * 10 / (time.perf_counter() - start) / 1e9  # read + write


def free_kv_blocks(ports: Ports) -> int:
    return int(gauge(scrape(ports.metrics), "qwen_engine_free_kv_blocks"))


def with_server_stats(ports: Ports, run):
    """run() -> (its result, {"triton": per-model statistics per request, "first_response": the tensorrt_llm
    model's time from a request's arrival to its first response, over the requests run() made})."""
    before = histogram(scrape(ports.metrics), FIRST_RESPONSE_METRIC)
    result, triton = with_triton_stats(f"127.0.0.1:{ports.grpc}", run)
    first = histogram_delta_ms(before, histogram(scrape(ports.metrics), FIRST_RESPONSE_METRIC))
    return result, {"triton": triton, "first_response": first}


def _server(engine_dir: Path, work: Path) -> tuple[TritonServer, Ports]:
    repo = work / f"repo-{engine_dir.name}"
    fill_repository(MODEL_REPOSITORY,
                    values_for_engine(engine_dir, device="cuda", preprocessing_instance_count=2,
                                      postprocessing_instance_count=4), repo)
    ports = Ports.free()
    return TritonServer(repo, ports, log_file=work / f"server-{engine_dir.name}.log", exit_timeout_s=5), ports


def error_lines(log: Path, keep: int = 30) -> list[str]:
    """The server log's lines that name an error (the model's exception, a CUDA fault), last `keep` of them:
    what a failed mode's record needs, which the log's tail (the model table) does not show."""
    if not log.is_file():
        return []
    marks = ("Error", "error:", "Traceback", "failed", "illegal")
    return [line[:500] for line in log.read_text(errors="replace").splitlines() if any(m in line for m in marks)][-keep:]


def c64_window(url: str, jobs: list[Job]):
    return run_steady_window(url, 64, jobs, C64_WARMUP_S, C64_WINDOW_S, processes=CLIENT_PROCESSES)


def c64_with_prefill_steps_only(engine_dir: Path, work: Path, jobs: list[Job]) -> dict:
    """The baseline of mixed steps, same run: the c64 window on an engine whose prompts always get a prefill
    step of their own (mixed_prefill_tokens 0)."""
    server, ports = _server(engine_dir, work)
    with server:
        return result_dict(c64_window(f"127.0.0.1:{ports.grpc}", jobs))


def engine_alone_first_token(engine_dir: Path, prompt_len: int = 512) -> dict:
    """benchmarks.prefill on the same engine, without Triton: the engine's share of time to first token. In its own
    process, so its GPU memory is free again before the server sizes its KV cache."""
    out = run_module(sys.executable, "benchmarks.prefill", "--engine-dir", str(engine_dir),
                     "--prompt-len", str(prompt_len)).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def serve_and_load(engine_dir: Path, work: Path, c64_jobs: list[Job], c64_requests: int) -> dict:
    server, ports = _server(engine_dir, work)
    with server:
        url = f"127.0.0.1:{ports.grpc}"
        blocks = free_kv_blocks(ports)
        run_jobs(url, 4, [Job(WORD * 64, 16, True)] * 8)  # warm-up
        bs1 = run_jobs(url, 1, [BS1_JOB] * 3)
        # transformers' batch-32 setup (HF_PROMPT_LEN-token prompts, HF_NEW_TOKENS each, all sent at once):
        # the like-for-like figure for its ratio; c64's ShareGPT-like load is not.
        bs32 = run_jobs(url, 32, [Job(WORD * HF_PROMPT_LEN, HF_NEW_TOKENS, True)] * 32)
        ttft_samples_ms(url, TTFT_JOB, repeats=0)  # first 512-token prompt: not in the stats
        # Statistics over all 9 TTFT requests; over the c64 run with its warm-up (where requests wait).
        ttft, ttft_stats = with_server_stats(ports, lambda: ttft_samples_ms(url, TTFT_JOB, repeats=8))
        c64, c64_stats = with_server_stats(ports, lambda: c64_window(url, c64_jobs))
        # The same lengths as a fixed list of requests: the figure includes the ramp-down at the end.
        c64_fixed = run_jobs(url, 64, c64_jobs[:c64_requests], processes=CLIENT_PROCESSES)
        c64_one_process = run_steady_window(url, 64, c64_jobs, 3.0, 10.0)  # what one client process can drive
    return {"kv_blocks": blocks, "bs1": result_dict(bs1), "bs32_like_hf": result_dict(bs32),
            "ttft_512_samples_ms": ttft,
            "ttft_512_triton_stats_ms": ttft_stats["triton"], "ttft_512_first_response_ms": ttft_stats["first_response"],
            "c64": result_dict(c64), "c64_triton_stats_ms": c64_stats["triton"],
            "c64_first_response_ms": c64_stats["first_response"],
            "c64_window": {"warmup_s": C64_WARMUP_S, "window_s": C64_WINDOW_S},
            "c64_client_processes": CLIENT_PROCESSES, "c64_fixed_requests": result_dict(c64_fixed),
            "c64_one_client_process": result_dict(c64_one_process)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--lengths", type=Path, default=LENGTHS)
    parser.add_argument("--c64-requests", type=int, default=256)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-prefill-steps-baseline", action="store_true",
                        help="skip the c64 run without mixed steps")
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/gpu and tests/fidelity first")
    parser.add_argument("--quantized", nargs="*", default=list(quant_gpu.MODES), choices=list(quant_gpu.MODES),
                        help="quantized modes run after the 16-bit engine (none: --quantized with no mode)")
    parser.add_argument("--hf-python", default=sys.executable,
                        help="interpreter with transformers for the baseline (the GPU host's own, not the bundle's)")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    gpu = torch.cuda.get_device_name()
    tests = {} if args.skip_tests else run_suites(args.hf_python)  # before the figures, on an idle GPU
    work = Path(tempfile.mkdtemp(prefix="qwen-bench-"))
    engine_dir = work / "engine"
    make_random_engine(engine_dir, QWEN_7B, LIMITS, seed=0)
    bandwidth = copy_bandwidth_gbs()
    fp16_bytes = quant_gpu.decode_bytes_per_step(engine_dir)
    floor = bandwidth * 1e9 / fp16_bytes
    hf = {} if args.skip_hf else json.loads(run_module(
        args.hf_python, "benchmarks.hf_baseline", "--engine-dir", str(engine_dir),
        "--prompt-len", str(HF_PROMPT_LEN), "--new-tokens", str(HF_NEW_TOKENS)).stdout.strip().splitlines()[-1])
    engine_alone = engine_alone_first_token(engine_dir)
    c64_jobs = [Job(WORD * i, o, True) for i, o in load_lengths(args.lengths)]  # raw prompts of i tokens
    served = serve_and_load(engine_dir, work, c64_jobs, args.c64_requests)
    if not args.skip_prefill_steps_baseline:
        separate = work / "engine-prefill-steps"
        make_random_engine(separate, QWEN_7B, dataclasses.replace(LIMITS, mixed_prefill_tokens=0), seed=0)
        served["c64_prefill_steps_only"] = c64_with_prefill_steps_only(separate, work, c64_jobs)
    result = {
        "gpu": gpu, "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": "random weights, Qwen-7B shape (4096 hidden, 32 layers, 32 heads, MLP 11008, vocab 151936), fp16",
        "decode_bs1_tok_s": round(1000 / served["bs1"]["itl_ms_mean"], 2),
        "ttft_512_ms": round(statistics.median(served["ttft_512_samples_ms"]), 2),
        "ttft_512_method": "first text of a 1-token request, one client stream kept open, median of 8",
        "engine_alone_ttft_512": engine_alone,
        "bs32_output_tok_s": served["bs32_like_hf"]["output_tok_s"],
        "c64_output_tok_s": served["c64"]["output_tok_s"], "c64_failed_requests": served["c64"]["failed"],
        "hf_bs1_tok_s": hf.get("hf_bs1_tok_s"), "hf_bs32_tok_s": hf.get("hf_bs32_tok_s"),
        "copy_bandwidth_gb_s": round(bandwidth, 1), "bandwidth_floor_bs1_tok_s": round(floor, 1),
        "max_concurrency_2048_tokens": served["kv_blocks"] * LIMITS.block_size // 2048,
        "hf_setup": hf.get("hf_setup"), "tests": tests, "served": served,
    }
    if hf:
        result["ratio_decode_bs1_vs_hf_bs1"] = round(result["decode_bs1_tok_s"] / hf["hf_bs1_tok_s"], 2)
        result["ratio_bs32_vs_hf_bs32"] = round(result["bs32_output_tok_s"] / hf["hf_bs32_tok_s"], 2)
    short = re.search(r"\b([A-Z]+\d{2,4})\b", gpu)
    out = args.out_dir / ((short.group(1) if short else "gpu").lower() + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Modes asked for and not yet measured: a run cut short (a device's time limit) leaves a file that says so.
    result["quantized_pending"] = list(args.quantized)
    out.write_text(json.dumps(result, indent=2) + "\n")  # the 16-bit figures, kept if a mode below fails
    quantized = {}
    for i, mode in enumerate(args.quantized):  # each written once measured; a mode that fails is recorded as such
        try:
            quantized[mode] = quant_gpu.run_mode(mode, work, LIMITS, _server, lambda url: c64_window(url, c64_jobs),
                                                 BS1_JOB, TTFT_JOB, bandwidth)
        except Exception as exc:  # noqa: BLE001 (measures and records: a failure is a result too)
            served[f"quantized_{mode}_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            served[f"quantized_{mode}_log_errors"] = error_lines(work / f"server-engine-{mode}.log")
        served.update({f"quantized_{m}": run for m, run in quantized.items()})
        result.update(quant_gpu.summary_fields(quantized, fp16_bytes) if quantized else {})
        result["quantized_pending"] = list(args.quantized[i + 1:])
        out.write_text(json.dumps(result, indent=2) + "\n")
    del result["quantized_pending"]  # the run ended: nothing left pending
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "served"}, indent=2))


if __name__ == "__main__":
    main()
