"""python -m client.soak (make soak): minutes of mixed load against a tritonserver it starts on the engine,
with cancellations and bad inputs among normal requests, then checks that it returns to idle: every request
answered (none lost), tritonserver's memory flat, every KV block free, nothing running, waiting or in flight.
Prints JSON; --out also writes it."""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from client.reliability import Server, in_flight_at_shutdown, rss_bytes
from qwen_triton.client import QwenClient
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

ROOT = Path(__file__).resolve().parents[1]
BAD_INPUTS = (dict(end_id=10**9), dict(bad_words=["x"] * 10_000), dict(top_p=2.0), dict(history="[" * 50_000))


def one_request(client: QwenClient, rng: random.Random) -> str:
    """One request of a random kind; returns its outcome (a Counter key). 'lost' is a wrong outcome."""
    kind = rng.choices(("stream", "whole", "cancel", "bad"), weights=(5, 2, 2, 1))[0]
    tokens = rng.randint(8, 96)
    options = dict(max_tokens=tokens, temperature=rng.choice((0.0, 0.8)), seed=rng.getrandbits(64))
    try:
        if kind == "bad":
            client.generate("Hello", **options, **rng.choice(BAD_INPUTS))
            return "lost: a bad input was served"
        if kind == "whole":
            return "done" if client.generate("Tell me a story.", **options).finish_reason else "lost: no finish"
        chunks = client.stream("Tell me a long story.", **options)
        for i, chunk in enumerate(chunks):
            if kind == "cancel" and i == 2:
                chunks.close()  # a consumer that stops early: the request is cancelled with the stream
                return "cancelled"
        return "done"
    except Exception as exc:
        return "refused" if kind == "bad" else f"lost: {exc}"


def worker(url: str, seed: int, until: float, outcomes: Counter, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    client = QwenClient(url, timeout_s=120)
    while time.monotonic() < until:
        outcome = one_request(client, rng)
        with lock:
            outcomes[outcome if not outcome.startswith("lost") else "lost"] += 1
            if outcome.startswith("lost"):
                outcomes[outcome[:160]] += 1
    client.close()


def soak(server: TritonServer, minutes: float, workers: int) -> dict:
    probe = Server(f"127.0.0.1:{server.ports.grpc}", server.ports.metrics)
    idle_blocks = probe.engine()["free_kv_blocks"]
    outcomes, lock = Counter(), threading.Lock()
    until = time.monotonic() + 60 * minutes
    threads = [threading.Thread(target=worker, args=(probe.grpc, i, until, outcomes, lock), daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    rss = []
    while any(t.is_alive() for t in threads):
        rss.append(round(rss_bytes(server.process.pid) / 2**20, 1))
        time.sleep(10)
    for t in threads:
        t.join()
    idle_s = probe.wait_idle(30)
    engine = probe.engine()
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 5))]  # after the first fifth: allocator and caches warm
    return {"minutes": minutes, "workers": workers, "outcomes": dict(outcomes), "lost": outcomes["lost"],
            "rss_mib_samples": rss, "rss_mib_warm": warm, "rss_mib_end": rss[-1],
            "rss_growth_pct": round(100 * (rss[-1] - warm) / warm, 2), "idle_after_s": idle_s,
            "engine_at_end": engine, "kv_blocks_idle": idle_blocks,
            "kv_blocks_back": engine["free_kv_blocks"] == idle_blocks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default=str(ROOT / "engines" / "qwen-tiny"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # The code the server runs is the code at the start.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    with tempfile.TemporaryDirectory() as work:
        repo = Path(work) / "repo"
        fill_repository(ROOT / "model_repository", values_for_engine(args.engine, device="cpu"), repo)
        server = TritonServer(repo, Ports.free(), log_file=Path(work) / "server.log", exit_timeout_s=10)
        with server:
            result = soak(server, args.minutes, args.workers)
            server.process.send_signal(2)  # SIGINT without the drain: what Triton itself still holds shows
            server.process.wait(60)
        result["in_flight_at_shutdown"] = in_flight_at_shutdown(server.log_file.read_text())
    result["command"] = "python -m client.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    result["commit"] = commit
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = result["lost"] == 0 and result["kv_blocks_back"] and result["in_flight_at_shutdown"] == 0
    return 0 if ok and result["rss_growth_pct"] < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
