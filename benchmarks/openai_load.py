"""benchmarks.load_generator's load sent through the OpenAI server instead of straight to Triton: each job a
streaming /v1/completions request (the raw prompt, as the gRPC load sends apply_chat_template false) read as
server-sent events over HTTP/1.1 keep-alive, from asyncio streams on one httpx client per process. The same
jobs, streams, processes, window and greedy sampling, the same max_tokens = min_tokens; only the path differs.
Measures; asserts nothing.

How tokens are counted. A gRPC response carries num_output_tokens, so the gRPC load knows how many tokens each
response brought. An SSE chunk carries text only, and under load the tensorrt_llm model merges several tokens
into one response (serving/responses.py), so a chunk's token count is not on the wire. Per request the total is
exact: usage.completion_tokens of the usage chunk (stream_options.include_usage), the same num_output_tokens the
gRPC load reads. That total is spread over the request's text chunks in proportion to their UTF-8 bytes
(byte_share); every token is counted once, and only a request that straddles an edge of the window can have a
token placed on the wrong side of it. A request whose chunks carry no text at all gets its tokens at the usage
chunk. Time to first token is the first chunk with non-empty text, as on gRPC."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

import httpx

from .load_generator import RESPONSE_TIMEOUT_S, Job, LoadResult, _Sample, run_steady_window

ROUTE = "/v1/completions"


class StreamError(RuntimeError):
    """The server answered with an error (HTTP status or an error event), or the stream ended early."""


def completion_body(job: Job, model: str, sampling: dict) -> dict:
    """The request the gRPC load would send, as OpenAI fields: build_request's sampling names are OpenAI's."""
    if not job.raw_prompt:
        raise ValueError("/v1/completions sends the prompt raw; a chat-templated job has no equivalent here")
    # min_tokens = max_tokens, as the gRPC load: every request generates exactly max_tokens.
    return {"model": model, "prompt": job.prompt, "max_tokens": job.max_tokens, "min_tokens": job.max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **sampling}


def byte_share(total_tokens: int, sizes: list[int]) -> list[int]:
    """Cumulative tokens after each chunk, given each chunk's text bytes: total_tokens spread in proportion to
    the bytes; non-decreasing, ending at total_tokens."""
    all_bytes, so_far, out = sum(sizes), 0, []
    for size in sizes:
        so_far += size
        out.append(round(total_tokens * so_far / all_bytes))
    return out


@dataclass
class StreamTally:
    """One SSE response, fed line by line with each line's arrival time (time.perf_counter())."""

    start_s: float
    arrival_s: list[float] = field(default_factory=list)  # per chunk with text
    sizes: list[int] = field(default_factory=list)  # its text's UTF-8 bytes
    completion_tokens: int | None = None
    usage_s: float | None = None
    done: bool = False  # data: [DONE] arrived

    def feed(self, line: str, now: float) -> None:
        if not line.startswith("data:"):  # the blank line ending each event; comments
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        event = json.loads(data)
        if "error" in event:
            raise StreamError(f"error event: {event['error'].get('message')}")
        for choice in event.get("choices") or ():
            text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if text:
                self.arrival_s.append(now)
                self.sizes.append(len(text.encode("utf-8")))
        if event.get("usage"):
            self.completion_tokens = int(event["usage"]["completion_tokens"])
            self.usage_s = now

    def sample(self, end_s: float) -> _Sample:
        """The request as load_generator's _Sample (tokens_at cumulative per text chunk, by byte_share)."""
        if not self.done:
            raise StreamError("the stream ended without data: [DONE]")
        if self.completion_tokens is None:
            raise StreamError("no usage chunk (stream_options.include_usage)")
        total = self.completion_tokens
        if self.sizes:
            arrivals, tokens_at, first = self.arrival_s, byte_share(total, self.sizes), self.arrival_s[0]
        else:
            arrivals, tokens_at, first = [self.usage_s], [total], end_s
        return _Sample(self.start_s, first - self.start_s, end_s - self.start_s, total, arrivals, tokens_at)


async def one_request(client: httpx.AsyncClient, body: dict) -> _Sample:
    tally = StreamTally(time.perf_counter())
    async with client.stream("POST", ROUTE, json=body) as response:
        if response.status_code != 200:
            raise StreamError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            tally.feed(line, time.perf_counter())
    return tally.sample(time.perf_counter())


def http_client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    """HTTP/1.1 with a kept-alive connection per stream (an SSE response holds its connection to the end); a
    chunk silent for RESPONSE_TIMEOUT_S fails the request, as on gRPC."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(RESPONSE_TIMEOUT_S))


async def served_model(client: httpx.AsyncClient) -> str:
    """The model id the server answers to, as its /v1/models lists it."""
    reply = await client.get("/v1/models")
    reply.raise_for_status()
    return reply.json()["data"][0]["id"]


async def run_streams(base_url: str, concurrency: int, jobs: list[Job], sampling: dict,
                      run_s: float | None = None) -> tuple[list[_Sample], list[str]]:
    """load_generator._run_threads over SSE: `concurrency` streams draw jobs until none is left; with run_s,
    they cycle through the jobs and start new requests until run_s has passed (those in flight then end)."""
    async with http_client(base_url, concurrency) as client:
        model = await served_model(client)
        deadline = None if run_s is None else time.perf_counter() + run_s
        source = iter(jobs) if deadline is None else itertools.cycle(jobs)
        samples: list[_Sample] = []
        failures: list[str] = []

        async def stream():
            # One event loop: drawing a job and appending a sample need no lock.
            while (job := next(source, None)) is not None:
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                try:
                    samples.append(await one_request(client, completion_body(job, model, sampling)))
                except Exception as exc:  # counted, reported, never hidden
                    failures.append(repr(exc))

        await asyncio.gather(*(stream() for _ in range(concurrency)))
    return samples, failures


def sse_process_main(url, concurrency, jobs, sampling, run_s, ready, start, results) -> None:
    """load_generator._process_main's contract (url: the OpenAI server's base URL, http://HOST:PORT)."""
    ready.put(None)
    start.wait()
    results.put(asyncio.run(run_streams(url, concurrency, jobs, sampling, run_s)))


def run_sse_steady_window(base_url: str, concurrency: int, jobs: list[Job], warmup_s: float, window_s: float,
                          greedy: bool = True, processes: int = 1) -> LoadResult:
    """load_generator.run_steady_window (same window arithmetic and summary) with SSE client processes."""
    return run_steady_window(base_url, concurrency, jobs, warmup_s, window_s, greedy, processes,
                             target=sse_process_main)


def run_sse_jobs(base_url: str, concurrency: int, jobs: list[Job]) -> list[_Sample]:
    """A fixed list of greedy requests from this process (warm-up); raises on the first failure."""
    samples, failures = asyncio.run(run_streams(base_url, concurrency, jobs, {"temperature": 0.0}))
    if failures:
        raise StreamError(f"{len(failures)} of {len(jobs)} requests failed, first: {failures[0]}")
    return samples
