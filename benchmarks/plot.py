"""benchmarks/results/<gpu>.json -> <gpu>.png: output tokens/s and inter-token latency at concurrency 1 and
64, with the batch-1 bandwidth floor and the transformers baseline drawn, and each quantized mode the run has. Needs matplotlib (pip install .[bench])."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .checkout import RESULTS


def plot(result_file: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = json.loads(result_file.read_text())
    served = r["served"]
    conc = [1, 64]
    tok_s = [r["decode_bs1_tok_s"], r["c64_output_tok_s"]]
    itl = [served["bs1"]["itl_ms_mean"], served["c64"]["itl_ms_mean"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(conc, tok_s, "o-", color="C0", label="this project (Triton ensemble, gRPC streaming)")
    if r.get("hf_bs1_tok_s") is not None:  # a run with --skip-hf has none
        left.plot([1, 32], [r["hf_bs1_tok_s"], r["hf_bs32_tok_s"]], "s--", color="C1",
                  label="transformers generate (batch 1, 32)")
    like_hf = served.get("bs32_like_hf")  # runs from 2026-12-05 on: transformers' batch-32 setup, served
    if like_hf:
        left.plot([32], [like_hf["output_tok_s"]], "D", color="C2", label="this project, batch 32 as transformers'")
        right.plot([32], [like_hf["itl_ms_mean"]], "D", color="C2", label="batch 32 as transformers'")
    separate = served.get("c64_prefill_steps_only")  # the same run without mixed steps
    if separate:
        left.plot([64], [separate["output_tok_s"]], "x", ms=9, color="C3",
                  label="c64, prefill steps only (no mixed steps)")
        right.plot([64], [separate["itl_ms_mean"]], "x", ms=9, color="C3", label="c64, prefill steps only")
    for i, mode in enumerate(m for m in ("int8", "int4", "fp8") if f"{m}_bs1_tok_s" in r):  # quantized modes
        color = f"C{4 + i}"
        left.plot(conc, [r[f"{mode}_bs1_tok_s"], r[f"{mode}_c64_output_tok_s"]], "^-", color=color, label=mode)
        left.axhline(r[f"{mode}_bandwidth_floor_bs1_tok_s"], color=color, ls=":", lw=0.8,
                     label=f"{mode} batch-1 bandwidth floor")
        mode_served = served[f"quantized_{mode}"]
        right.plot(conc, [mode_served["bs1"]["itl_ms_mean"], mode_served["c64"]["itl_ms_mean"]], "^-", color=color,
                   label=f"{mode} inter-token latency")
    left.axhline(r["bandwidth_floor_bs1_tok_s"], color="grey", ls=":", label="batch-1 bandwidth floor")
    left.set(xscale="log", yscale="log", xlabel="concurrent requests", ylabel="output tokens/s",
             title="Throughput (output tokens only)")
    left.legend(fontsize=8)
    right.plot(conc, itl, "o-", color="C0", label="inter-token latency")
    right.axhline(1000 / r["bandwidth_floor_bs1_tok_s"], color="grey", ls=":", label="batch-1 floor (ms/token)")
    right.set(xscale="log", xlabel="concurrent requests", ylabel="ms", title=f"Latency (TTFT 512-token prompt: "
              f"{r['ttft_512_ms']:.0f} ms)")
    right.legend(fontsize=8)
    fig.suptitle(f"{r['gpu']}: {r['model']} ({r['date']})", fontsize=9)
    fig.tight_layout()
    out = result_file.with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("result", nargs="?", type=Path, default=RESULTS / "h100.json")
    print(f"wrote {plot(parser.parse_args(argv).result)}")


if __name__ == "__main__":
    main()
