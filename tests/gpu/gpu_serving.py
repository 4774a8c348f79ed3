"""Serving helper shared by the GPU tests (imported by basename: tests/gpu is on sys.path under pytest)."""


def serve_joining(runner, limits, prompts, max_tokens: int) -> tuple[list[list[int]], int]:
    """Greedy tokens per prompt, each prompt submitted after 3 steps of the ones before (it joins a running
    batch: a mixed step where the runner has mixed graphs), and how many steps were mixed."""
    from qwen_triton.runtime.engine import Engine
    from qwen_triton.runtime.sequence import SamplingParams

    engine = Engine(runner, limits)
    outputs, mixed = [[] for _ in prompts], []
    schedule = engine.scheduler.schedule
    engine.scheduler.schedule = lambda: (out := schedule(), mixed.append(out.is_mixed))[0]
    for i, prompt in enumerate(prompts):
        sink = lambda event, out=outputs[i]: out.extend(event.new_token_ids) or True  # noqa: E731
        engine.submit(list(prompt), SamplingParams(max_tokens=max_tokens), sink)
        for _ in range(3):
            engine.step()
    while engine.step():
        pass
    return outputs, sum(mixed)
