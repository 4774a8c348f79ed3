"""Where the served c64 load spends its CPU: py-spy samples of every Triton Python-backend stub while the
load runs (random Qwen-7B-shape engine, as benchmarks.gpu). Writes collapsed stacks and prints, per stub thread,
its busy fraction and hottest frames. Diagnostic only; needs py-spy on PATH."""
from __future__ import annotations

import argparse
import collections
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine
from qwen_triton.tools.random_checkpoint import QWEN_7B
from qwen_triton.tools.random_engine import make_random_engine

from .checkout import MODEL_REPOSITORY
from .gpu import CLIENT_PROCESSES, LIMITS, WORD
from .load_generator import Job, run_jobs
from .sharegpt import LENGTHS, load_lengths


def stub_pids() -> dict[int, str]:
    pids = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if cmd and cmd[0].endswith(b"triton_python_backend_stub"):
            pids[int(proc.name)] = Path(cmd[1].decode()).parts[-3]  # .../<model>/1/model.py
    return pids


def summarise(raw: Path, rate: int, seconds: float, top: int = 12) -> list[str]:
    per_thread, frames = collections.Counter(), collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *calls = stack.split(";")
        per_thread[thread] += int(count)
        for call in set(calls):
            frames[thread][call] += int(count)
    out = []
    for thread, samples in per_thread.most_common():
        out.append(f"  {thread}: busy {samples / (rate * seconds):.0%}")
        out += [f"      {n / samples:5.0%}  {call}" for call, n in frames[thread].most_common(top)]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default=".")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=int, default=100)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qwen-profile-"))
    make_random_engine(work / "engine", QWEN_7B, LIMITS, seed=0)
    fill_repository(MODEL_REPOSITORY,
                    values_for_engine(work / "engine", device="cuda", preprocessing_instance_count=2,
                                      postprocessing_instance_count=4), work / "repo")
    lengths = load_lengths(LENGTHS)
    with TritonServer(work / "repo", Ports.free(), log_file=work / "server.log") as server:
        url = f"127.0.0.1:{server.ports.grpc}"
        run_jobs(url, 4, [Job(WORD * 64, 16, True)] * 8)
        load = threading.Thread(target=run_jobs, args=(url, 64, [Job(WORD * i, o, True) for i, o in lengths[:256]]),
                                kwargs={"processes": CLIENT_PROCESSES})
        load.start()
        time.sleep(8)
        spies = {pid: (name, Path(args.out_dir) / f"pyspy-{name}-{pid}.txt") for pid, name in stub_pids().items()}
        procs = [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                   "--rate", str(args.rate), "--format", "raw", "--threads", "--nonblocking",
                                   "-o", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid, (name, path) in spies.items()]
        for p in procs:
            p.wait()
        load.join()
    for pid, (name, path) in spies.items():
        print(f"{name} (pid {pid})")
        print("\n".join(summarise(path, args.rate, args.seconds)) if path.is_file() else "  no samples")


if __name__ == "__main__":
    main()
