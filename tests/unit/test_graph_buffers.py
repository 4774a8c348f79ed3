"""The CUDA-graph classes' static buffers (row offsets, padding, scratch slot, logit rows) checked on CPU:
capture is replaced by an eager stand-in that reruns the captured step on replay, so every replay computes
what the real graph would from the same buffers. tests/gpu replays real graphs."""
import math

import pytest
import torch

from qwen_triton.config import load_engine_folder
from qwen_triton.runtime import cuda_graphs
from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams, Sequence
from qwen_triton.runtime.schedule_output import ScheduleOutput


class EagerGraph:
    def __init__(self, step):
        self.step = step
        self.out = step()

    def replay(self):
        self.out.copy_(self.step())  # the graph's output buffer, rewritten in place like a replay

    def pool(self):
        return None


@pytest.fixture
def runners(tiny_engine, monkeypatch):
    monkeypatch.setattr(cuda_graphs, "capture", lambda step, pool: (g := EagerGraph(step), g.out))
    folder = load_engine_folder(tiny_engine)
    graphed, eager = ModelRunner(folder, device="cpu"), ModelRunner(folder, device="cpu")
    limits, scratch = folder.config.limits, graphed.num_kv_blocks * graphed.block_size
    max_blocks = math.ceil(limits.max_seq_len / graphed.block_size)
    with torch.inference_mode():
        graphed.prefill_graphs = cuda_graphs.PrefillGraphs(graphed.model, graphed.kv_caches, 64, scratch, "cpu")
        graphed.graphs = cuda_graphs.DecodeGraphs(graphed.model, graphed.kv_caches, 8, max_blocks, scratch, "cpu",
                                                  paged_attention_kernel=True)
        graphed.mixed_graphs = cuda_graphs.MixedGraphs(graphed.model, graphed.kv_caches, 8, 64, max_blocks, scratch,
                                                       "cpu")
    return graphed, eager


def _steps(runner):
    """Prompts prefilled (two at once), decoded twice, then a mixed step with a new 20-token prompt."""
    seqs = [Sequence(list(range(10 + i, 15 + 3 * i)), SamplingParams()) for i in range(3)]
    for i, seq in enumerate(seqs):
        seq.block_table = list(range(8 * i, 8 * i + 8))
    history = [runner.execute(ScheduleOutput(prefill=tuple(seqs[:2]))), runner.execute(ScheduleOutput(prefill=(seqs[2],)))]
    for rows, group in ((history[0], seqs[:2]), (history[1], seqs[2:])):
        for seq, row in zip(group, rows):
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(int(row.argmax()))
    for _ in range(2):
        history.append(runner.execute(ScheduleOutput(decode=tuple(seqs))))
        for seq, row in zip(seqs, history[-1]):
            seq.num_cached_tokens = len(seq)
            seq.output_ids.append(int(row.argmax()))
    new = Sequence(list(range(300, 320)), SamplingParams())
    new.block_table = list(range(24, 32))
    history.append(runner.execute(ScheduleOutput(prefill=(new,), decode=tuple(seqs))))
    return history


def test_graph_buffers_give_the_eager_logits_and_kv(runners):
    graphed, eager = runners
    got, want = _steps(graphed), _steps(eager)
    assert [g.shape for g in got] == [w.shape for w in want] and got[-1].shape[0] == 4  # 3 decodes + 1 prefill
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() < 1e-4
    written = slice(0, 32)
    assert (graphed.kv_cache[:, :, written] - eager.kv_cache[:, :, written]).abs().max().item() < 1e-5
    assert graphed.kv_cache[:, :, 32:-1].abs().max().item() == 0  # padding wrote only to the scratch block
