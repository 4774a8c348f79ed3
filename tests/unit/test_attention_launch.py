"""Decode-attention launch policy (no GPU needed): even context splits at small batch, chunks covering the
whole block table at large batch, the tile loop pipelined only with Hopper-class shared memory; programmatic
dependent launch stays off off Hopper-class CUDA devices."""
import pytest
import torch

from benchmarks.attention import served_contexts
from qwen_triton.models import paged_attention, pdl


class Props:  # the fields of torch.cuda.get_device_properties the launch reads
    def __init__(self, shared, sms=132):
        self.shared_memory_per_multiprocessor = shared
        self.multi_processor_count = sms


def _on_device(monkeypatch, policy):
    shared = 233472 if policy is paged_attention.PIPELINED else 167936  # an H200's, an A100's
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props(shared))


PIPELINED, UNPIPELINED = paged_attention.PIPELINED, paged_attention.UNPIPELINED


@pytest.mark.parametrize("policy,batch,splits,tile", [
    (PIPELINED, 1, 32, 32), (PIPELINED, 4, 8, 32), (PIPELINED, 8, 4, 32),
    (UNPIPELINED, 1, 16, 64), (UNPIPELINED, 4, 4, 128), (UNPIPELINED, 8, 2, 128),
])
def test_small_batches_split_each_context_evenly(monkeypatch, policy, batch, splits, tile):
    _on_device(monkeypatch, policy)
    launch = paged_attention.default_launch(batch, 32, 2048, torch.device("cuda"))
    assert (launch.splits, launch.tile, launch.chunk_tiles, launch.stages) == (splits, tile, 0, policy.stages)


@pytest.mark.parametrize("max_tokens", [16, 256, 257, 2048])
@pytest.mark.parametrize("policy,batch", [(PIPELINED, 16), (PIPELINED, 64), (UNPIPELINED, 16)])
def test_large_batches_read_chunks_that_cover_the_longest_table(monkeypatch, max_tokens, policy, batch):
    _on_device(monkeypatch, policy)
    launch = paged_attention.default_launch(batch, 32, max_tokens, torch.device("cuda"))
    chunk_tokens = launch.chunk_tiles * launch.tile
    assert launch.chunk_tiles > 0 and launch.stages == policy.stages
    assert launch.splits * chunk_tokens >= max_tokens > (launch.splits - 1) * chunk_tokens  # no grid row always empty


@pytest.mark.parametrize("batch", [16, 32, 64, 128])
def test_long_tables_do_not_grow_the_grid_past_the_cap(monkeypatch, batch):
    _on_device(monkeypatch, PIPELINED)
    launch = paged_attention.default_launch(batch, 32, 32768, torch.device("cuda"))
    assert launch.chunk_tiles > 0 and launch.splits >= 1
    assert launch.splits * batch * 32 <= max(paged_attention.MAX_CHUNK_PROGRAMS, batch * 32)


def test_only_hopper_class_shared_memory_pipelines():
    for shared, policy in [(233472, PIPELINED), (167936, UNPIPELINED), (102400, UNPIPELINED)]:  # H200, A100, L4
        assert paged_attention.launch_policy(Props(shared)) is policy
    assert paged_attention.launch_policy(object()) is UNPIPELINED  # a torch without the field


@pytest.mark.parametrize("bad", [dict(splits=0), dict(tile=0), dict(warps=0), dict(chunk_tiles=-1), dict(stages=0)])
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


def test_split_counters_are_zero_shared_per_device_and_grow_to_the_rows_asked():
    cpu = torch.device("cpu")
    counters = paged_attention.split_counters(cpu, 64)
    assert counters.dtype == torch.int32 and int(counters.abs().sum()) == 0
    assert paged_attention.split_counters(cpu, 32) is counters  # every launch on the device shares it
    grown = paged_attention.split_counters(cpu, counters.numel() + 1)
    assert grown.numel() > counters.numel() and int(grown.abs().sum()) == 0
