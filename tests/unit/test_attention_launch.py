"""Decode-attention launch policy (no GPU needed): even context splits at small batch, chunks covering the
whole block table at large batch; programmatic dependent launch stays off off Hopper-class CUDA devices."""
import pytest
import torch

from qwen_triton.bench.attention import served_contexts
from qwen_triton.models import paged_attention, pdl


@pytest.mark.parametrize("batch,even", [(1, 32), (4, 8), (8, 4)])
def test_small_batches_split_each_context_evenly(monkeypatch, batch, even):
    monkeypatch.setattr(paged_attention, "num_splits", lambda b, h, device: even)
    launch = paged_attention.default_launch(batch, 32, 2048, torch.device("cuda"))
    assert launch.splits == even and launch.chunk_tiles == 0


@pytest.mark.parametrize("max_tokens", [16, 256, 257, 2048])
@pytest.mark.parametrize("even", [1, 2])  # too few programs per (sequence, head) to share each context evenly
def test_large_batches_read_chunks_that_cover_the_longest_table(monkeypatch, max_tokens, even):
    monkeypatch.setattr(paged_attention, "num_splits", lambda b, h, device: even)
    launch = paged_attention.default_launch(64, 32, max_tokens, torch.device("cuda"))
    chunk_tokens = launch.chunk_tiles * launch.tile
    assert launch.chunk_tiles > 0
    assert launch.splits * chunk_tokens >= max_tokens > (launch.splits - 1) * chunk_tokens  # no grid row always empty


@pytest.mark.parametrize("batch", [16, 32, 64, 128])
def test_long_tables_do_not_grow_the_grid_past_the_cap(monkeypatch, batch):
    monkeypatch.setattr(paged_attention, "num_splits", lambda b, h, device: 1)
    launch = paged_attention.default_launch(batch, 32, 32768, torch.device("cuda"))
    assert launch.chunk_tiles > 0 and launch.splits >= 1
    assert launch.splits * batch * 32 <= max(paged_attention.MAX_CHUNK_PROGRAMS, batch * 32)


@pytest.mark.parametrize("bad", [dict(splits=0), dict(tile=0), dict(warps=0), dict(chunk_tiles=-1)])
def test_bad_launches_are_refused(bad):
    with pytest.raises(ValueError):
        paged_attention.Launch(**{"splits": 1, "tile": 64, "warps": 2, **bad})


def test_pdl_needs_compute_capability_9_and_can_be_switched_off(monkeypatch):
    assert pdl.launch_kwargs(torch.device("cpu")) == {"PDL": False}
    monkeypatch.setattr(pdl, "SUPPORTED", True)  # as with a Triton that has griddepcontrol
    capability = {0: 9, 1: 8}
    monkeypatch.setattr(pdl, "_device_allows", lambda index: capability[index] >= 9)
    assert pdl.launch_kwargs(torch.device("cuda", 0)) == {"PDL": True, "launch_pdl": True}
    assert pdl.launch_kwargs(torch.device("cuda", 1)) == {"PDL": False}  # an A100: no griddepcontrol
    monkeypatch.setenv("QWEN_TRITON_PDL", "0")
    assert pdl.launch_kwargs(torch.device("cuda", 0)) == {"PDL": False}


def test_served_contexts_follow_the_shipped_lengths():
    contexts = served_contexts(64)
    assert contexts == served_contexts(64)  # seeded
    assert len(contexts) == 64 and min(contexts) >= 9 and max(contexts) <= 2048
    assert 250 < sum(contexts) / 64 < 550  # a running request is past its prompt (mean ~200) into its output
