"""A streaming gRPC load generator against the served ensemble: output tokens/s, time to first token and
inter-token latency of each request, from threads or several client processes, over a fixed list of requests
or a steady window; and Triton's per-model statistics over a run. Measures; asserts nothing."""
from __future__ import annotations

import bisect
import itertools
import multiprocessing
import statistics
import threading
import time
from dataclasses import asdict, dataclass

import tritonclient.grpc as grpcclient

from qwen_triton.client import QwenClient

DEFAULT_PROMPT = "Write a short story about a robot who learns to paint."
RESPONSE_TIMEOUT_S = 120.0  # a request silent this long counts as failed instead of hanging the load


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    failed: int
    duration_s: float
    output_tokens: int
    output_tok_s: float  # output tokens only, never prompt + output
    ttft_ms_mean: float
    ttft_ms_p50: float
    itl_ms_mean: float  # (last chunk - first chunk) / (output tokens - 1), per request, averaged
    latency_ms_p50: float


@dataclass
class _Sample:
    start_s: float  # time.perf_counter(): CLOCK_MONOTONIC, comparable across the client processes
    ttft_s: float
    latency_s: float
    output_tokens: int
    arrival_s: list[float]  # per chunk, with the cumulative output tokens it brought
    tokens_at: list[int]

    def tokens_by(self, t: float) -> int:
        """Output tokens received by time t."""
        i = bisect.bisect_right(self.arrival_s, t)
        return self.tokens_at[i - 1] if i else 0


@dataclass(frozen=True)
class Job:
    prompt: str
    max_tokens: int
    raw_prompt: bool = False  # True: no chat template, the prompt's token count is exact


def _one_request(client: QwenClient, job: Job, sampling: dict) -> _Sample:
    start = time.perf_counter()
    first = None
    arrivals, tokens = [], []
    options = dict(sampling, apply_chat_template=False) if job.raw_prompt else sampling
    # min_tokens = max_tokens: every request generates exactly max_tokens (random weights rarely stop).
    for chunk in client.stream(job.prompt, max_tokens=job.max_tokens, min_tokens=job.max_tokens, **options):
        now = time.perf_counter()
        if first is None and chunk.text:
            first = now
        arrivals.append(now)
        tokens.append(chunk.num_output_tokens)
    end = time.perf_counter()
    return _Sample(start, (first or end) - start, end - start, tokens[-1] if tokens else 0, arrivals, tokens)


def _run_threads(url: str, concurrency: int, jobs: list[Job], sampling: dict,
                 run_s: float | None = None) -> tuple[list[_Sample], list[str]]:
    """`concurrency` streams draw jobs from one queue until it is empty; with run_s, they cycle through the
    jobs and start new requests until run_s has passed (the requests in flight then run to their end)."""
    deadline = None if run_s is None else time.perf_counter() + run_s
    source = iter(jobs) if deadline is None else itertools.cycle(jobs)
    samples: list[_Sample] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker():
        client = QwenClient(url, timeout_s=RESPONSE_TIMEOUT_S)
        while True:
            with lock:
                job = next(source, None)
                if job is None or (deadline is not None and time.perf_counter() >= deadline):
                    break
            try:
                sample = _one_request(client, job, sampling)
                with lock:
                    samples.append(sample)
            except Exception as exc:  # counted, reported, never hidden
                with lock:
                    failures.append(repr(exc))
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, failures


def _process_main(url, concurrency, jobs, sampling, run_s, ready, start, results) -> None:
    ready.put(None)
    start.wait()
    results.put(_run_threads(url, concurrency, jobs, sampling, run_s))


def _run_processes(url: str, concurrency: int, jobs: list[Job], sampling: dict, processes: int,
                   run_s: float | None = None, target=_process_main):
    """The same load from several client processes: one Python process decoding every streamed response
    saturates its GIL long before the server does. Timing starts when all processes are up. target: what each
    process runs, with _process_main's arguments (benchmarks.openai_load's sends the load as SSE instead)."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=target, daemon=True,
                           args=(url, concurrency // processes + (i < concurrency % processes),
                                 jobs[i::processes], sampling, run_s, ready, start, results))
               for i in range(processes)]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    samples, failures = [], []
    for _ in workers:
        got_samples, got_failures = results.get()
        samples += got_samples
        failures += got_failures
    duration = time.perf_counter() - began
    for w in workers:
        w.join(10)
    return samples, failures, began, duration


def run_jobs(url: str, concurrency: int, jobs: list[Job], greedy: bool = True, processes: int = 1) -> LoadResult:
    sampling = {"temperature": 0.0} if greedy else {}  # else the engine's generation defaults apply
    processes = max(1, min(processes, concurrency))
    if processes == 1:
        began = time.perf_counter()
        samples, failures = _run_threads(url, concurrency, jobs, sampling)
        duration = time.perf_counter() - began
    else:
        samples, failures, _, duration = _run_processes(url, concurrency, jobs, sampling, processes)
    return _summarise(concurrency, samples, len(failures), duration)


def run_steady_window(url: str, concurrency: int, jobs: list[Job], warmup_s: float, window_s: float,
                      greedy: bool = True, processes: int = 1, target=_process_main) -> LoadResult:
    """Throughput at a held concurrency, as perf_analyzer measures it: every stream keeps one request in
    flight (cycling through jobs) for warmup_s + window_s, and only the output tokens that arrive inside the
    window are counted; a fixed list of requests would instead end with a ramp-down at falling concurrency.
    TTFT and ITL come from the requests started inside the window; failures from the whole run."""
    sampling = {"temperature": 0.0} if greedy else {}
    samples, failures, began, _ = _run_processes(url, concurrency, jobs, sampling, max(1, min(processes, concurrency)),
                                                 run_s=warmup_s + window_s, target=target)
    lo, hi = began + warmup_s, began + warmup_s + window_s
    tokens = sum(s.tokens_by(hi) - s.tokens_by(lo) for s in samples)
    inside = [s for s in samples if lo <= s.start_s < hi]
    return _summarise(concurrency, inside, len(failures), window_s, tokens)


def ttft_samples_ms(url: str, job: Job, repeats: int) -> list[float]:
    """Time to the first text of `repeats` requests sent one after another on one client (its stream kept
    open, as perf_analyzer keeps it), after one request that is not counted."""
    samples, failures = _run_threads(url, 1, [job] * (repeats + 1), {"temperature": 0.0})
    if failures:
        raise RuntimeError(f"time-to-first-token request failed: {failures[0]}")
    return [round(1000 * s.ttft_s, 2) for s in samples[1:]]


def triton_model_stats(url: str) -> dict:
    """Triton's cumulative statistics: {model: {phase: (count, ns)}}."""
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(as_json=True)["model_stats"]
    finally:
        client.close()
    keys = ("queue", "compute_input", "compute_infer", "compute_output", "success")
    return {m["name"]: {k: (int(m["inference_stats"][k].get("count", 0)), int(m["inference_stats"][k].get("ns", 0)))
                        for k in keys} for m in stats}


def per_request_ms(before: dict, after: dict) -> dict:
    """Triton's statistics between two snapshots: mean ms per request of each model and phase."""
    out = {}
    for model, phases in after.items():
        count = phases["success"][0] - before[model]["success"][0]
        if count:
            out[model] = {phase: round((ns - before[model][phase][1]) / count / 1e6, 3)
                          for phase, (_, ns) in phases.items()}
    return out


def with_triton_stats(url: str, run):
    """run() -> (its result, Triton's per-model statistics per request over it)."""
    before = triton_model_stats(url)
    result = run()
    return result, per_request_ms(before, triton_model_stats(url))


def run_streaming_load(url: str, concurrency: int, requests_per_worker: int, max_tokens: int,
                       prompt: str = DEFAULT_PROMPT, greedy: bool = True, processes: int = 1) -> LoadResult:
    jobs = [Job(prompt, max_tokens)] * (concurrency * requests_per_worker)
    return run_jobs(url, concurrency, jobs, greedy, processes)


def _summarise(concurrency: int, samples: list[_Sample], failed: int, duration: float,
               tokens: int | None = None) -> LoadResult:
    tokens = sum(s.output_tokens for s in samples) if tokens is None else tokens
    itls = [(s.latency_s - s.ttft_s) / (s.output_tokens - 1) for s in samples if s.output_tokens > 1]
    ms = lambda values, fn: 1000 * fn(values) if values else float("nan")  # noqa: E731
    return LoadResult(
        concurrency=concurrency, requests=len(samples), failed=failed, duration_s=round(duration, 3),
        output_tokens=tokens, output_tok_s=round(tokens / duration, 2),
        ttft_ms_mean=round(ms([s.ttft_s for s in samples], statistics.mean), 2),
        ttft_ms_p50=round(ms([s.ttft_s for s in samples], statistics.median), 2),
        itl_ms_mean=round(ms(itls, statistics.mean), 2),
        latency_ms_p50=round(ms([s.latency_s for s in samples], statistics.median), 2))


def result_dict(result: LoadResult) -> dict:
    return asdict(result)
