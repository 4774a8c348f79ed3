"""On a CUDA device: the engine's steps (overlapped or serial, with mixed steps or without) give the same
tokens, and launching an overlapped decode step never waits for the device (skipped without a GPU)."""
import pytest
import torch

from qwen_triton.runtime.model_runner import ModelRunner
from qwen_triton.runtime.sequence import SamplingParams
from gpu_serving import serve_joining  # tests/gpu is on sys.path (pytest rootdir-relative import)


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_engine_overlap_gives_the_same_tokens_as_serial_steps(folder, limits, prompts):
    from qwen_triton.runtime.engine import Engine

    runner = ModelRunner(folder, device="cuda", dtype="float32")

    def serve(overlap):
        engine = Engine(runner, limits, overlap=overlap)
        outputs = [[] for _ in prompts]
        for i, prompt in enumerate(prompts):
            sink = lambda event, out=outputs[i]: out.extend(event.new_token_ids) or True  # noqa: E731
            engine.submit(list(prompt), SamplingParams(max_tokens=40 + 7 * i), sink)
        while engine.step():
            pass
        assert engine.stats().free_kv_blocks == runner.num_kv_blocks
        return outputs

    serial, overlapped = serve(False), serve(True)
    assert overlapped == serial and [len(o) for o in serial] == [40, 47, 54]


def test_overlapped_decode_steps_never_wait_for_the_device(folder, limits, prompts):
    """The launch of a step (runner inputs, graph replay, min-tokens mask, argmax) makes no blocking CUDA call:
    one would wait for the step in flight and the host work would no longer overlap the GPU."""
    from qwen_triton.runtime.engine import Engine

    runner = ModelRunner(folder, device="cuda", dtype="float32")
    engine = Engine(runner, limits)
    launches = {"decode": 0}
    execute, sample = runner.execute, engine.sampler.sample_on_device

    def strict(fn, kind=None):
        def call(schedule_or_logits, *args):
            if kind is not None:
                launches[kind] += not schedule_or_logits.is_prefill
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(schedule_or_logits, *args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return call

    runner.execute, engine.sampler.sample_on_device = strict(execute, "decode"), strict(sample)
    outputs = []
    engine.submit(list(prompts[0]), SamplingParams(max_tokens=24, min_tokens=20), lambda e: outputs.append(e) or True)
    while engine.step():
        pass
    assert [e.error for e in outputs if e.error] == [] and outputs[-1].num_output_tokens == 24
    assert launches["decode"] >= 22


def test_engine_with_mixed_steps_gives_the_eager_engines_tokens(folder, limits, prompts):
    graphed, mixed_steps = serve_joining(ModelRunner(folder, device="cuda", dtype="float32"), limits, prompts, 30)
    eager, eager_mixed = serve_joining(ModelRunner(folder, device="cuda", dtype="float32", use_cuda_graphs=False),
                                       limits, prompts, 30)
    assert graphed == eager and [len(o) for o in eager] == [30] * len(prompts)
    assert mixed_steps == len(prompts) - 1 and eager_mixed == 0

