"""Run by tests/unit/test_kernels_compiled.py in a subprocess, without TRITON_INTERPRET: Triton's real compiler
(front end, TTGIR, LLVM, PTX and ptxas, all on this CPU; no GPU or driver needed) for Hopper (sm_90) on every
launch the runtime makes of models/quant_gemv.py's kernels at Qwen-7B's and Qwen2.5-1.5B's layer shapes, in
float16 and bfloat16. The interpreter runs Python, so it accepts code the compiler refuses (a helper whose
returns differ in type did exactly that to the fp8 GEMV). A control kernel with that fault must fail to
compile, or this script would prove nothing. One JSON line per case on stdout."""
import json
import os

import triton
import triton.language as tl

assert os.environ.get("TRITON_INTERPRET") != "1", "run with Triton's compiler, not its interpreter"

from benchmarks import sass_loop  # noqa: E402
from qwen_triton.models import fp8_gemm, fp8_quant, quant_gemv, quant_launch, row_gemv  # noqa: E402

SHAPES = ((12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008), (2048, 1536), (17920, 1536))
ROWS = (1, 2, 16, 17, 33, 64)  # the GEMV's row counts (its BLOCK_M: 1, 16, 32, 64)
DTYPES = {"float16": "fp16", "bfloat16": "bf16"}
POINTERS = {"scale_ptr": "*fp32", "zero_ptr": "*u8", "parts_ptr": "*fp32", "count_ptr": "*i32"}


def gemv_cases():
    """(label, kernel, pointers, constexprs, warps) for each distinct launch of linear_int8/int4/fp8_weight."""
    seen = set()
    for dtype, (precision, kernel) in ((d, p) for d in DTYPES for p in (
            ("int8", quant_gemv._int8_gemv_kernel), ("fp8", quant_gemv._int8_gemv_kernel),
            ("int4", quant_gemv._int4_gemv_kernel))):
        launches = [quant_launch.choose_launch(m, n, k, precision, 128)
                    for m in ROWS for n, k in SHAPES]
        launches.append(quant_launch.gemm_launch(precision, 128))  # the fused GEMM (fp8: W8A16, below W8A8's rows)
        for block_m, block_n, block_k, splits, warps, weight_first in launches:
            for has_bias in (True, False):
                constexprs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLITS": splits,
                              "HAS_BIAS": has_bias, "PDL": True, "W_FIRST": weight_first,
                              **({"FP8": precision == "fp8"} if precision != "int4" else {}),
                              **({"GROUP": 128} if precision == "int4" else {})}
                key = (dtype, precision, tuple(constexprs.items()), warps)
                if key in seen:
                    continue
                seen.add(key)
                q = "*i8" if precision == "int8" else "*u8"
                pointers = {"x_ptr": f"*{DTYPES[dtype]}", "q_ptr": q, "bias_ptr": f"*{DTYPES[dtype]}",
                            "out_ptr": f"*{DTYPES[dtype]}", **POINTERS}
                label = (f"{precision} {dtype} {block_m}x{block_n}x{block_k}/{splits}{' bias' if has_bias else ''}"
                         f"{' weight first' if weight_first else ''}")
                yield label, kernel, pointers, constexprs, warps


def dequantize_cases():
    for dtype, int4 in ((d, i) for d in DTYPES for i in (False, True)):
        pointers = {"q_ptr": "*u8" if int4 else "*i8", "w_ptr": f"*{DTYPES[dtype]}", **POINTERS}
        constexprs = {"INT4": int4, "GROUP": 128, "BLOCK_N": 16, "BLOCK_K": 128, "PDL": True}
        yield f"dequantize {'int4' if int4 else 'int8'} {dtype}", quant_gemv._dequantize_kernel, pointers, constexprs, 4


def fp8_quantize_cases():
    for dtype in DTYPES:
        pointers = {"x_ptr": f"*{DTYPES[dtype]}", "q_ptr": "*fp8e4nv", "scale_ptr": "*fp32"}
        constexprs = {"FP8_MAX": fp8_quant.FP8_MAX, "BLOCK": 1024, "PDL": True}
        yield f"fp8_quantize rows {dtype}", fp8_quant._quantize_rows_kernel, pointers, constexprs, 4


def row_cases():
    """models/row_gemv.py for each kind (float16 only) at the runtime's launches where quant_launch takes it, else one
    launch of the sweep's; split (float32 partials summed by the last split) and not, with a bias; and at the
    sweep's (benchmarks/quant_gemv.py --row-pipeline) loads pipelined 3 stages deep, the next tile prefetched with
    int4's scales group-major."""
    for kind in ("int4", "int8", "fp8"):
        launches = set(quant_launch.ROW_LAUNCHES.get(kind, {}).values()) or {(64, 128, 4, 4)}
        for block_n, block_k, splits, warps in sorted(launches | {(16, 128, 1, 4)}):
            pointers = {"x_ptr": "*fp16", "q_ptr": "*i8" if kind == "int8" else "*u8", "bias_ptr": "*fp16",
                        "out_ptr": "*fp16", **POINTERS}
            constexprs = {"BLOCK_M": 1, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLITS": splits, "HAS_BIAS": True,
                          "PDL": True, "KIND": kind, "ASM": row_gemv.PTX[kind], "UNSCALE": row_gemv.UNSCALE[kind],
                          **({"GROUP": 128} if kind == "int4" else {})}
            yield f"row {kind} {block_n}x{block_k}/{splits}", row_gemv._row_kernel, pointers, constexprs, warps
        yield f"row {kind} 3 stages", row_gemv._row_kernel, pointers, {**constexprs, "STAGES": 3}, warps
        yield (f"row {kind} prefetched", row_gemv._row_kernel, pointers,
               {**constexprs, "PREFETCH": True, "GROUP_MAJOR": kind == "int4"}, warps)


def fp8_gemm_cases():
    for dtype in DTYPES:
        block_m, block_n, block_k, warps, _ = fp8_gemm.LAUNCH
        pointers = {"xq_ptr": "*fp8e4nv", "w_ptr": "*fp8e4nv", "x_scale_ptr": "*fp32", "w_scale_ptr": "*fp32",
                    "bias_ptr": f"*{DTYPES[dtype]}", "out_ptr": f"*{DTYPES[dtype]}"}
        constexprs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": fp8_gemm.GROUP_M,
                      "HAS_BIAS": True, "PDL": True}
        yield f"fp8_gemm w8a8 {dtype}", fp8_gemm._fp8_gemm_kernel, pointers, constexprs, warps
        # linear_rows at each of its launches, K split (float32 partials summed by the last split) and not.
        launches = {la for by_width in fp8_gemm.ROWS_LAUNCHES.values() for la in by_width.values()}
        for block_m, block_n, block_k, splits, warps, stages in sorted(launches):
            rows_pointers = {**pointers, "parts_ptr": "*fp32", "count_ptr": "*i32"}
            constexprs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLITS": splits,
                          "STAGES": stages, "HAS_BIAS": True, "PDL": True}
            yield (f"fp8_gemm rows {block_m}x{block_n}x{block_k}/{splits} {dtype}", fp8_gemm._fp8_rows_kernel,
                   rows_pointers, constexprs, warps)


@triton.jit
def _control_helper(q, AS_FLOAT: tl.constexpr):
    if AS_FLOAT:
        return q.to(tl.float32)
    return q


@triton.jit
def _control_kernel(q_ptr, out_ptr, AS_FLOAT: tl.constexpr):
    offsets = tl.arange(0, 16)
    tl.store(out_ptr + offsets, _control_helper(tl.load(q_ptr + offsets), AS_FLOAT).to(tl.float32))


def sass_loop_case() -> dict:
    """The int4 tile's inner loop at one of the runtime's launches (1-16 rows), read from its SASS with
    benchmarks/sass_loop.py: instructions per weight per thread, and whether the tensor cores run it."""
    sass = sass_loop.disassemble(sass_loop.compile_cubin("int4", {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128,
                                                                   "GROUP": 128, "SPLITS": 1, "HAS_BIAS": False,
                                                                   "PDL": True}, 4))
    count, mix = sass_loop.loop_mix(sass)
    return {"sass_loop": "int4 16x64x128, 4 warps", "per_weight": count / sass_loop.weights_per_thread(64, 128, 4),
            "hmma": mix["HMMA"]}


def main() -> None:
    for label, kernel, pointers, constexprs, warps in [*gemv_cases(), *dequantize_cases(), *fp8_quantize_cases(),
                                                       *row_cases(), *fp8_gemm_cases()]:
        try:
            sass_loop.compile_for_hopper(kernel, pointers, constexprs, warps)
            print(json.dumps({"case": label, "ok": True}), flush=True)
        except Exception as exc:  # noqa: BLE001 (each case is reported, the test decides)
            cause = exc.__cause__ or exc
            print(json.dumps({"case": label, "ok": False, "error": f"{type(cause).__name__}: {cause}"[:2000]}))
    print(json.dumps(sass_loop_case()), flush=True)
    try:
        sass_loop.compile_for_hopper(_control_kernel, {"q_ptr": "*u8", "out_ptr": "*fp32"}, {"AS_FLOAT": True}, 4)
        print(json.dumps({"control": "inconsistent returns", "compiled": True}))
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({"control": "inconsistent returns", "compiled": False, "error": str(exc.__cause__)[:300]}))


if __name__ == "__main__":
    main()
