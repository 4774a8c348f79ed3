"""Programmatic dependent launch (PDL, compute capability 9.0 and up). A kernel launched with it may be
scheduled while the kernel before it in the stream still runs, so its launch latency hides behind that
kernel's tail; it then waits (griddepcontrol.wait) for that kernel's completion and memory before reading
or writing anything. At batch 1 a decode step is hundreds of short dependent kernels, so the gaps between
them are a real share of the step. Contract for every kernel launched through
launch_kwargs(): it calls wait_then_release(PDL) before its first global memory access (the chain stays
ordered transitively: a kernel completes only after its own wait). cuBLAS and torch kernels keep plain stream
order. QWEN_TRITON_PDL=0 turns it off (an A/B switch for the benchmarks)."""
from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import cuda as _tl_cuda
except ImportError:  # CPU-only installs
    triton = None
    _tl_cuda = None

SUPPORTED = _tl_cuda is not None and hasattr(_tl_cuda, "gdc_wait") and hasattr(_tl_cuda, "gdc_launch_dependents")


@functools.cache
def _device_allows(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def enabled(device: torch.device) -> bool:
    if not SUPPORTED or device.type != "cuda" or os.environ.get("QWEN_TRITON_PDL", "1") == "0":
        return False
    return _device_allows(device.index if device.index is not None else torch.cuda.current_device())


def launch_kwargs(device: torch.device) -> dict:
    """Keyword arguments for a kernel launch: the PDL constexpr and Triton's launch flag, both on or both off."""
    on = enabled(device)
    return {"PDL": on, "launch_pdl": True} if on else {"PDL": False}


if triton is not None and SUPPORTED:

    @triton.jit
    def wait_then_release(PDL: tl.constexpr):
        # Wait for the kernel before (its writes visible), then let the next kernel's launch begin.
        if PDL:
            _tl_cuda.gdc_wait()
            _tl_cuda.gdc_launch_dependents()

elif triton is not None:

    @triton.jit
    def wait_then_release(PDL: tl.constexpr):
        pass
