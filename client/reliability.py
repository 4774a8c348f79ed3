"""Reliability probes against a served ensemble, shared by tests/reliability and `python -m client.soak`:
cancel storms timed to an idle engine, poison requests among innocents, a heavy word list beside a normal
request, tritonserver's memory and what it still holds in flight. They measure; the callers assert."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from client.server_metrics import gauge, samples, scrape
from qwen_triton.client import QwenClient
from qwen_triton.serving.launcher import http_ready
from qwen_triton.serving.processes import children, is_alive

LONG = dict(temperature=0.0)  # with min_tokens = max_tokens: a request that runs to its full length


@dataclass(frozen=True)
class Server:
    """Where a served ensemble listens (grpc "host:port") and its metrics port."""

    grpc: str
    metrics_port: int
    host: str = "127.0.0.1"

    def engine(self) -> dict[str, int]:
        text = scrape(self.metrics_port, self.host)
        return {name: int(gauge(text, f"qwen_engine_{name}"))
                for name in ("running_requests", "waiting_requests", "free_kv_blocks")}

    def busy(self) -> int:
        engine = self.engine()
        return engine["running_requests"] + engine["waiting_requests"]

    def wait_idle(self, timeout_s: float, poll_s: float = 0.02) -> float | None:
        """Seconds until no request is running or waiting, None if still busy after timeout_s."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.busy() == 0:
                return time.monotonic() - start
            time.sleep(poll_s)
        return None

    def answered(self, model: str = "ensemble") -> int:
        """Requests Triton has finished for a model (its success and failure counters): it counts one when it
        releases the request, which for a cancelled one comes after the engine freed its slot."""
        text = scrape(self.metrics_port, self.host)
        return int(sum(value for name in ("nv_inference_request_success", "nv_inference_request_failure")
                       for labels, value in samples(text, name) if f'model="{model}"' in labels))

    def wait_answered(self, count: int, timeout_s: float, model: str = "ensemble") -> float | None:
        """Seconds until Triton has finished `count` requests of the model, None if it has not by timeout_s."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.answered(model) >= count:
                return time.monotonic() - start
            time.sleep(0.02)
        return None


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (tritonserver itself, not its stubs)."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match[1]) * 1024


def in_flight_at_shutdown(log_text: str) -> int:
    """Inferences Triton still counted in flight when it began to stop (its first report after the signal)."""
    found = re.search(r'Model \'[^\']+\' \(version \d+\) has (\d+) in-flight inferences', log_text)
    return int(found[1]) if found else 0


def cancel_storm(server: Server, n: int, tokens: int = 2000, stream: bool = True,
                 idle_timeout_s: float = 30.0) -> dict:
    """n long requests, each on its own client; once the engine holds them all (running or waiting) every
    client cancels (stop_stream(cancel_requests=True)). Returns the seconds from the cancel to an idle engine."""
    if server.wait_idle(idle_timeout_s) is None:
        raise RuntimeError("the engine is busy before the storm")
    clients = [QwenClient(server.grpc) for _ in range(n)]
    streams = [c.stream(f"Request {i}: write a very long essay.", max_tokens=tokens, min_tokens=tokens,
                        stream=stream, **LONG) for i, c in enumerate(clients)]
    with ThreadPoolExecutor(n) as pool:  # a generator sends its request at its first next()
        firsts = [pool.submit(next, s, None) for s in streams]
        deadline = time.monotonic() + 30
        while server.busy() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        if stream:  # every request has answered once: its ensemble is past preprocessing
            for future in firsts:
                future.result(timeout=30)
        held = server.busy()
        for c in clients:
            c._close_stream(cancel_requests=True)
        idle_s = server.wait_idle(idle_timeout_s)
        for future in firsts:
            future.exception()
    for c in clients:
        c.close()
    return {"requests": n, "held_before_cancel": held, "idle_after_s": None if idle_s is None else round(idle_s, 3)}


HOLDER = """
import sys, time
from qwen_triton.client import QwenClient
url, n, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clients = [QwenClient(url) for _ in range(n)]
streams = [c.stream("Hold this.", max_tokens=tokens, min_tokens=tokens, temperature=0.0) for c in clients]
for s in streams:
    next(s)
print("holding", flush=True)
time.sleep(600)
"""


def killed_client(server: Server, n: int = 16, tokens: int = 2000, idle_timeout_s: float = 30.0) -> dict:
    """A client process holding n streamed requests is SIGKILLed: seconds until the engine is idle."""
    if server.wait_idle(idle_timeout_s) is None:
        raise RuntimeError("the engine is busy before the client starts")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, server.grpc, str(n), str(tokens)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        deadline = time.monotonic() + 5  # the gauges are published at most every few tens of ms
        while server.busy() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        held = server.busy()
        holder.kill()
        holder.wait()
        idle_s = server.wait_idle(idle_timeout_s)
    finally:
        holder.kill()
    return {"requests": n, "held_before_kill": held, "idle_after_s": None if idle_s is None else round(idle_s, 3)}


def _outcome(url: str, text: str, options: dict) -> str:
    try:
        with QwenClient(url, timeout_s=60) as client:
            return "ok:" + client.generate(text, **options).finish_reason
    except Exception as exc:  # the refusal of a poison request, or an innocent's failure
        return f"error:{exc}"


def poison_round(server: Server, poison: dict, innocents: int = 7, max_tokens: int = 16) -> dict:
    """One poison request and `innocents` normal ones sent at the same moment."""
    jobs = [dict(max_tokens=max_tokens, temperature=0.0) for _ in range(innocents)]
    jobs.insert(innocents // 2, {**dict(max_tokens=max_tokens, temperature=0.0), **poison})
    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = list(pool.map(lambda job: _outcome(server.grpc, "Tell me about the sea.", job), jobs))
    poisoned = outcomes.pop(innocents // 2)
    return {"poison": poisoned, "innocents_failed": sum(not o.startswith("ok:") for o in outcomes),
            "innocent_errors": [o for o in outcomes if not o.startswith("ok:")][:3]}


def timed_generate(url: str, text: str, **options) -> float:
    with QwenClient(url, timeout_s=120) as client:
        start = time.perf_counter()
        client.generate(text, **options)
        return time.perf_counter() - start


def _beside(url: str, neighbour: dict, normal: dict) -> float:
    """Time of a normal request started just after `neighbour`."""
    thread = threading.Thread(target=_outcome, args=(url, "Hello", neighbour), daemon=True)
    thread.start()
    time.sleep(0.05)
    elapsed = timed_generate(url, "Hello", **normal)
    thread.join()
    return elapsed


def beside_heavy_request(server: Server, heavy: dict, tokens: int = 32, repeats: int = 7) -> dict:
    """A normal request's time (median of `repeats`) alone, beside `heavy` and beside `heavy` without its word
    lists, the two neighbours taking turns: on two cores any neighbour slows it, so the word lists' own cost is
    beside_s / beside_plain_s."""
    normal = dict(max_tokens=tokens, min_tokens=tokens, temperature=0.0)
    plain = {k: v for k, v in heavy.items() if k not in ("bad_words", "stop_words")}
    alone, beside, beside_plain = [], [], []
    for _ in range(repeats):
        alone.append(timed_generate(server.grpc, "Hello", **normal))
        beside.append(_beside(server.grpc, heavy, normal))
        beside_plain.append(_beside(server.grpc, plain, normal))
    alone_s, beside_s, plain_s = (sorted(times)[repeats // 2] for times in (alone, beside, beside_plain))
    return {"alone_s": round(alone_s, 4), "beside_s": round(beside_s, 4), "beside_plain_s": round(plain_s, 4),
            "ratio": round(beside_s / alone_s, 2), "ratio_to_plain_neighbour": round(beside_s / plain_s, 2)}


class Launched:
    """`python -m qwen_triton.serving.launcher` (what make serve runs) in a subprocess, on a filled repository."""

    def __init__(self, repo: Path, ports, log_file: Path, openai_port: int = 0):
        self.repo, self.ports, self.log_file = repo, ports, log_file
        self.openai_port = openai_port  # 0: the launcher starts no OpenAI server
        self.server = Server(f"127.0.0.1:{ports.grpc}", ports.metrics)
        self.process: subprocess.Popen | None = None

    def ready(self) -> bool:
        return http_ready("127.0.0.1", self.ports.http, timeout_s=1.0)

    def start(self, timeout_s: float = 180) -> "Launched":
        command = [sys.executable, "-m", "qwen_triton.serving.launcher", "--model-repository", str(self.repo),
                   "--grpc-port", str(self.ports.grpc), "--http-port", str(self.ports.http),
                   "--metrics-port", str(self.ports.metrics), "--openai-port", str(self.openai_port)]
        self.process = subprocess.Popen(command, stdout=open(self.log_file, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"launcher not ready; see {self.log_file}")
            time.sleep(0.2)
        return self

    def processes(self) -> list[int]:
        """tritonserver and its stubs while they run."""
        server = children(self.process.pid) if self.process else []
        return [pid for pid in server + [c for pid in server for c in children(pid)] if is_alive(pid)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def _load(url: str, stop: threading.Event, outcomes: list) -> None:
    client = QwenClient(url, timeout_s=60)
    while not stop.is_set():
        try:
            outcomes.append(list(client.stream("Write a long story.", max_tokens=300, temperature=0.0))[-1].finish_reason)
        except Exception as exc:
            outcomes.append(f"error: {str(exc)[:100]}")
    client.close()


def sigterm_under_load(launched: Launched, streams: int = 16, load_s: float = 3.0) -> dict:
    """SIGTERM to the launcher while `streams` clients keep it busy: exit code, seconds to exit, crash lines in
    its log, processes left behind, and how the clients' requests ended."""
    stop, outcomes = threading.Event(), []
    # daemon: a client stuck on a stream (the server gone mid-call) must not keep the caller's process from exiting
    clients = [threading.Thread(target=_load, args=(launched.server.grpc, stop, outcomes), daemon=True)
               for _ in range(streams)]
    for t in clients:
        t.start()
    time.sleep(load_s)
    deadline = time.monotonic() + 30  # a busy machine may take longer to get the streams running
    while launched.server.busy() < streams // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = launched.processes()
    start = time.monotonic()
    launched.process.send_signal(signal.SIGTERM)
    try:
        code = launched.process.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    exit_s = time.monotonic() - start
    stop.set()
    for t in clients:
        t.join(60)
    time.sleep(0.5)
    log = launched.log_file.read_text(errors="replace")
    crashes = [line for line in log.splitlines() if re.search(CRASH, line)]
    return {"exit_code": code, "exit_s": round(exit_s, 2), "crash_lines": crashes[:5],
            # Triton's shutdown, in order: every in-flight inference ends (what the drain makes happen), then
            # every model unloads; either not done within the exit timeout: "failed to stop server".
            "in_flight_cleared": bool(re.search(IN_FLIGHT_CLEARED, log)),
            "exit_timeout_expired": "failed to stop server" in log,
            "left_behind": [pid for pid in tree if is_alive(pid)],
            "outcomes": dict(Counter(o if not o.startswith("error") else o[:70] for o in outcomes))}


CRASH = r"malloc\(\)|Segmentation|SIGSEGV|Aborted|core dumped|terminate called|Non-graceful"
IN_FLIGHT_CLEARED = r"Found 0 model versions that have in-flight inferences"


def kill_stub(launched: Launched, model: str, tokens: int = 2000, timeout_s: float = 90) -> dict:
    """SIGKILL of one model's stub while a long request runs: when that request ended and how, whether the
    server was seen not ready, when it served again."""
    ended, streaming = {}, threading.Event()

    def long_request():
        try:
            with QwenClient(launched.server.grpc, timeout_s=60) as client:
                for _ in client.stream("A long one.", max_tokens=tokens, min_tokens=tokens, temperature=0.0):
                    streaming.set()
            ended["outcome"] = "finished"
        except Exception as exc:
            ended["outcome"] = f"error: {str(exc)[:100]}"
        ended["at"] = time.monotonic()
        streaming.set()

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    # Killed once the request streams (the engine gauges lag a previous request's end: "busy" could count that).
    streaming.wait(60)
    stub = next(pid for pid in launched.processes() if f"/{model}/" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"))
    start = time.monotonic()
    os.kill(stub, signal.SIGKILL)
    not_ready_seen, back_s = False, None
    while time.monotonic() - start < timeout_s:
        ready = launched.ready()
        not_ready_seen |= not ready
        if ready and not_ready_seen:
            back_s = time.monotonic() - start
            break
        time.sleep(0.1)
    thread.join(60)
    served = _outcome(launched.server.grpc, "Hello again.", dict(max_tokens=4))
    # Not back in time: the server's last lines say why (the stub's restart, or what stopped it).
    log_tail = [] if back_s is not None else launched.log_file.read_text(errors="replace").splitlines()[-25:]
    return {"model": model, "in_flight": ended.get("outcome"),
            "in_flight_ended_after_s": round(ended["at"] - start, 2) if "at" in ended else None,
            "not_ready_seen": not_ready_seen, "serving_again_after_s": None if back_s is None else round(back_s, 2),
            "next_request": served, "log_tail": log_tail}
