"""python -m client.reliability_report: the reliability issue's measurements at full size on this machine,
through the ensemble, written as JSON (benchmarks/results/reliability_cpu.json). tests/reliability runs the
same probes, smaller, in `make test`.

Cancellations: one 2,000-token request (streamed and not) and 32 at once, seconds to an idle engine; 600
cancellations, tritonserver's memory before and after and what it holds in flight at shutdown. SIGTERM to the
launcher under 16 streams, `--sigterm-runs` times. SIGKILL of the tensorrt_llm and preprocessing stubs.
Poison requests among 7 innocents, 5 rounds each. A normal request beside the heaviest accepted word list."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from client.reliability import (Launched, Server, beside_heavy_request, cancel_storm, in_flight_at_shutdown,
                                kill_stub, killed_client, poison_round, rss_bytes, sigterm_under_load)
from qwen_triton.config import EngineLimits, load_engine_folder
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.convert import convert_checkpoint
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine
from qwen_triton.tools.random_checkpoint import make_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Long enough that 2,000-token requests run for seconds on a CPU (a cancel that does not arrive shows).
LIMITS = EngineLimits(dtype="float32", max_batch_size=32, max_input_len=1024, max_seq_len=4096,
                      max_num_batched_tokens=4096, block_size=16)
POISONS = {"end_id": dict(end_id=10**9, min_tokens=4), "pad_id": dict(pad_id=10**9),
           "bad_words": dict(bad_words=["x"] * 100_000), "top_p": dict(top_p=1.5),
           "history": dict(history="[" * 100_000 + "]" * 100_000)}


def build_repo(work: Path) -> tuple[Path, Path]:
    make_random_checkpoint(work / "hf", flavour="qwen", seed=0)
    convert_checkpoint(work / "hf", work / "engine", LIMITS)
    fill_repository(ROOT / "model_repository", values_for_engine(work / "engine", device="cpu"), work / "repo")
    return work / "engine", work / "repo"


def probes(repo: Path, engine: Path, work: Path, cancellations: int) -> dict:
    server = TritonServer(repo, Ports.free(), log_file=work / "server.log", exit_timeout_s=10)
    out = {}
    with server:
        probe = Server(f"127.0.0.1:{server.ports.grpc}", server.ports.metrics)
        out["cancel_1_streamed"] = cancel_storm(probe, 1)
        out["cancel_1_not_streamed"] = cancel_storm(probe, 1, stream=False)
        out["cancel_32_streamed"] = cancel_storm(probe, 32)
        out["killed_client_16_streams"] = killed_client(probe, 16)
        before = rss_bytes(server.process.pid)
        storms = [cancel_storm(probe, 30) for _ in range(cancellations // 30)]
        after = rss_bytes(server.process.pid)
        out["cancellations"] = {"count": 30 * len(storms), "rss_mib_before": round(before / 2**20, 1),
                                "rss_mib_after": round(after / 2**20, 1),
                                "rss_growth_mib": round((after - before) / 2**20, 2),
                                "slowest_idle_after_s": max(s["idle_after_s"] or float("inf") for s in storms)}
        out["poison"] = {name: [poison_round(probe, poison) for _ in range(5)] for name, poison in POISONS.items()}
        limits = load_engine_folder(engine).config.limits
        words = [f"w{i} " + "lorem ipsum dolor sit amet " * 4 for i in range(limits.max_words_per_list)]
        out["heavy_word_list"] = beside_heavy_request(probe, dict(bad_words=words, stop_words=words, max_tokens=96,
                                                                  min_tokens=96, temperature=0.0), repeats=9)
        server.process.send_signal(2)  # Triton's own shutdown, no drain: it reports what it still holds
        server.process.wait(60)
    out["cancellations"]["in_flight_at_shutdown"] = in_flight_at_shutdown(server.log_file.read_text())
    return out


def lifecycle(repo: Path, work: Path, sigterm_runs: int) -> dict:
    runs = []
    for i in range(sigterm_runs):
        runs.append(sigterm_under_load(Launched(repo, Ports.free(), work / f"sigterm{i}.log").start(), streams=16))
    stubs = []
    for model in ("tensorrt_llm", "preprocessing"):
        launched = Launched(repo, Ports.free(), work / f"kill-{model}.log").start()
        try:
            stubs.append(kill_stub(launched, model))
        finally:
            launched.stop()
    clean = sum(r["exit_code"] == 0 and r["exit_s"] < 15 and not r["crash_lines"] and not r["left_behind"]
                for r in runs)
    return {"sigterm_under_16_streams": {"runs": runs, "clean": clean, "of": len(runs)}, "killed_stubs": stubs}


def markdown(report: dict, soak: dict) -> str:
    """The table docs/reliability.md shows, from the two result files (tests check the page holds it)."""
    c, runs, stubs = report["cancellations"], report["sigterm_under_16_streams"], report["killed_stubs"]
    exits = [r["exit_s"] for r in runs["runs"]]
    innocents = sum(r["innocents_failed"] for rounds in report["poison"].values() for r in rounds)
    rounds = sum(len(r) for r in report["poison"].values())
    heavy = report["heavy_word_list"]
    rows = [
        ("one 2,000-token request cancelled, streamed / not", "engine idle within 1 s",
         f"{report['cancel_1_streamed']['idle_after_s']} s / {report['cancel_1_not_streamed']['idle_after_s']} s"),
        ("32 cancelled at once", "within 2 s", f"{report['cancel_32_streamed']['idle_after_s']} s"),
        ("a client process holding 16 streams killed", "(no bound; 47 s before)",
         f"engine idle after {report['killed_client_16_streams']['idle_after_s']} s"
         if "killed_client_16_streams" in report else "not in this result file"),
        (f"{c['count']} cancellations", "RSS +5 MB at most, 0 in flight",
         f"RSS {c['rss_mib_before']} -> {c['rss_mib_after']} MiB (+{c['rss_growth_mib']}), "
         f"{c['in_flight_at_shutdown']} in flight"),
        ("SIGTERM to the launcher under 16 streams", "10 of 10 clean within 15 s",
         f"{runs['clean']} of {runs['of']} clean, exit in {min(exits)} to {max(exits)} s"),
        *((f"SIGKILL of the {s['model']} stub", "in flight fails within 5 s, serving within 60 s",
           f"failed after {s['in_flight_ended_after_s']} s, not ready "
           f"{'seen' if s['not_ready_seen'] else 'never seen'}, serving after "
           f"{s['serving_again_after_s']} s") for s in stubs),
        (f"poison requests ({', '.join(report['poison'])}) among 7 innocents", "0 innocents fail",
         f"{innocents} failed in {rounds} rounds"),
        ("a 32-token request beside the heaviest accepted word list", "2x its time alone at most",
         f"{heavy['ratio']}x ({heavy['alone_s'] * 1000:.0f} -> {heavy['beside_s'] * 1000:.0f} ms)"),
        (f"make soak, {soak['minutes']:g} minutes, {soak['workers']} clients",
         "0 lost, memory flat within 5%, idle at the end",
         f"{sum(v for k, v in soak['outcomes'].items() if not k.startswith('lost'))} requests, {soak['lost']} lost, "
         f"RSS +{soak['rss_growth_pct']}% after warm-up, KV blocks back: {soak['kv_blocks_back']}, "
         f"{soak['in_flight_at_shutdown']} in flight"),
    ]
    lines = ["| what | issue's bound | measured |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {m} |" for a, b, m in rows])


def ab_markdown(ab: dict) -> str:
    """The served figures before and after the reliability work on one GPU host (h100_reliability_ab.json)."""
    lines = [f"On one {ab['gpu']} ({ab['date']}), through the ensemble, in run order: first "
             f"`{ab['commands']['first']}`, then alternating `{ab['commands']['ab']}`:", "",
             "| code | batch-1 decode tok/s | TTFT 512 ms | batch 32 tok/s | c64 tok/s | c64 TTFT p50 ms | c64 failed |",
             "|---|---|---|---|---|---|---|"]
    for run in ab["runs"]:
        code = "before (" + ab["base_commit"] + ")" if run["code"] == "base" else "after"
        lines.append(f"| {code} | {run['decode_bs1_tok_s']} | {run['ttft_512_ms']} | {run['bs32_output_tok_s']} | "
                     f"{run['c64_output_tok_s']} | {run['c64_ttft_ms_p50']} | {run['c64_failed_requests']} |")
    tests = ab["tests"]
    lines += ["", f"The same host ran tests/gpu ({tests['gpu']['summary']}) and tests/fidelity "
                  f"({tests['fidelity']['summary']}) on the new code first."]
    return "\n".join(lines)


BEGIN, END = "<!-- reliability table: python -m client.reliability_report --render -->", "<!-- end of table -->"


def render(page: Path, results: Path) -> None:
    """Writes the table between the page's markers from the committed results."""
    table = markdown(json.loads((results / "reliability_cpu.json").read_text()),
                     json.loads((results / "soak_cpu.json").read_text()))
    table += "\n\n" + ab_markdown(json.loads((results / "h100_reliability_ab.json").read_text()))
    text = page.read_text()
    head, rest = text.split(BEGIN)
    page.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END)[1]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite docs/reliability.md's table from the committed results")
    parser.add_argument("--cancellations", type=int, default=600)
    parser.add_argument("--sigterm-runs", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.render:
        render(ROOT / "docs" / "reliability.md", ROOT / "benchmarks" / "results")
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    result = {"command": "python -m client.reliability_report " + " ".join(sys.argv[1:] if argv is None else argv),
              "commit": commit.strip(), "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine, repo = build_repo(work)
        result.update(probes(repo, engine, work, args.cancellations))
        result.update(lifecycle(repo, work, args.sigterm_runs))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
