"""The OpenAI-compatible server (python -m qwen_triton.openai_server, a subprocess) in front of the real
tritonserver, driven by the official openai SDK: answers equal to the ensemble's own, streaming, stop strings,
length, seeds, usage, /v1/models, concurrent streams, refusals naming the field, and a client that disconnects
mid-stream freeing its engine slot. Streaming tests need the decoupled repository."""
import asyncio
import json
import re
import time

import httpx
import openai
import pytest

from qwen_triton.client import QwenClient

pytestmark = pytest.mark.e2e
GREEDY = dict(temperature=0.0, max_tokens=24)
HI = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture
def sdk(frontend):
    with openai.OpenAI(base_url=f"{frontend.base_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def _chat(sdk, messages=HI, **options):
    return sdk.chat.completions.create(model="ensemble", messages=messages, **{**GREEDY, **options})


def _stream(sdk, messages=HI, **options) -> tuple[str, list]:
    chunks = list(_chat(sdk, messages, stream=True, **options))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_chat_answer_equals_the_ensembles(sdk, triton):
    answer = _chat(sdk)
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as direct:
        expected = direct.generate(HI[0]["content"], **GREEDY)
    assert answer.object == "chat.completion" and answer.model == "ensemble"
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage.prompt_tokens == expected.num_input_tokens
    assert answer.usage.completion_tokens == expected.num_output_tokens
    assert answer.usage.total_tokens == expected.num_input_tokens + expected.num_output_tokens


@pytest.mark.decoupled_only
def test_streamed_deltas_equal_the_whole_answer(sdk):
    whole = _chat(sdk)
    text, chunks = _stream(sdk, stream_options={"include_usage": True})
    assert text == whole.choices[0].message.content and len(chunks) > 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_multi_turn_messages_are_the_ensembles_history(sdk, triton):
    messages = [{"role": "system", "content": "You answer in one line."},
                {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "fish."}]}]
    answer = _chat(sdk, messages)
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as direct:
        expected = direct.generate("Name a fish.", system_prompt="You answer in one line.",
                                   history=[["Hello!", "Hi, how can I help?"]], **GREEDY)
        without_history = direct.generate("Name a fish.", system_prompt="You answer in one line.", **GREEDY)
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.prompt_tokens == expected.num_input_tokens > without_history.num_input_tokens


def test_stop_string_ends_the_answer_before_it(sdk):
    full = _chat(sdk, max_tokens=32).choices[0].message.content
    stop = next(word for word in full[4:].split() if len(word) >= 3 and full.index(word) > 0)[:3]
    answer = _chat(sdk, max_tokens=32, stop=[stop, "never-generated-stop"])
    assert answer.choices[0].message.content == full[:full.index(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_max_tokens_ends_with_length_and_counts_them(sdk):
    answer = _chat(sdk, max_tokens=5, extra_body={"min_tokens": 5})
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 5
    answer = _chat(sdk, max_completion_tokens=3, max_tokens=None, extra_body={"min_tokens": 3})
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 3


def test_same_seed_same_answer(sdk):
    sampled = dict(temperature=1.0, top_p=1.0, max_tokens=16)
    first, again = (_chat(sdk, seed=1234, **sampled).choices[0].message.content for _ in range(2))
    other = _chat(sdk, seed=4321, **sampled).choices[0].message.content
    assert first == again and first != other


def test_completions_send_the_raw_prompt(sdk, triton):
    answer = sdk.completions.create(model="ensemble", prompt="Once upon a time", **GREEDY)
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as direct:
        expected = direct.generate("Once upon a time", apply_chat_template=False, **GREEDY)
    assert answer.choices[0].text == expected.text and answer.usage.prompt_tokens == expected.num_input_tokens


def test_models_lists_the_engine_context(sdk, tiny_engine):
    limits = json.loads((tiny_engine / "engine_config.json").read_text())["limits"]
    (model,) = sdk.models.list().data
    assert model.id == "ensemble" and model.object == "model"
    assert model.max_model_len == limits["max_seq_len"] and model.max_input_len == limits["max_input_len"]


@pytest.mark.decoupled_only
def test_eight_concurrent_streams_each_get_their_own_answer(frontend, sdk):
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(8)]
    expected = [_chat(sdk, [{"role": "user", "content": p}]).choices[0].message.content for p in prompts]

    async def stream_all():
        async with openai.AsyncOpenAI(base_url=f"{frontend.base_url}/v1", api_key="unused", max_retries=0) as aio:
            async def one(prompt):
                stream = await aio.chat.completions.create(model="ensemble", stream=True, **GREEDY,
                                                           messages=[{"role": "user", "content": prompt}])
                return "".join([c.choices[0].delta.content or "" async for c in stream])
            return await asyncio.gather(*(one(p) for p in prompts))

    assert asyncio.run(stream_all()) == expected


BAD_REQUESTS = [  # (what the SDK sends, the field the 400 must name)
    (dict(temperature=5.0), "temperature"),
    (dict(n=2), "n"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(logprobs=True, top_logprobs=2), "logprobs"),
    (dict(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]), "messages"),
    (dict(extra_body={"frobnicate": True}), "frobnicate"),
    (dict(stop=[f"w{i}" for i in range(300)]), "stop"),  # refused by the ensemble itself (too many words)
    (dict(messages=[{"role": "user", "content": "word " * 3000}]), "messages"),  # prompt over max_input_len
]


@pytest.mark.parametrize("fields, param", BAD_REQUESTS, ids=[p for _, p in BAD_REQUESTS])
def test_bad_requests_get_openai_shaped_400s_and_the_server_keeps_serving(sdk, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        _chat(sdk, **fields)
    error = refused.value.body
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and param in error["message"]
    assert _chat(sdk, max_tokens=2).choices[0].finish_reason in ("length", "stop")


def test_a_completion_prompt_the_engine_cannot_take_is_a_400_naming_prompt(sdk):
    with pytest.raises(openai.BadRequestError) as refused:  # longer than the engine's max_input_len
        sdk.completions.create(model="ensemble", prompt="word " * 3000, max_tokens=2)
    assert refused.value.body["param"] == "prompt" and "prompt" in refused.value.body["message"]


def test_unknown_model_is_a_404(sdk):
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.chat.completions.create(model="gpt-4o", messages=HI)
    assert refused.value.body["code"] == "model_not_found" and refused.value.body["param"] == "model"


def _engine_steps(triton) -> int:
    """The engine's steps since it started (NVIDIA's iteration counter on Triton's metrics port)."""
    text = httpx.get(f"http://127.0.0.1:{triton.ports.metrics}/metrics", timeout=5).text
    return int(float(re.search(r'^nv_trt_llm_general_metrics\{[^}]*general_type="iteration_counter"[^}]*\} (\S+)$',
                               text, re.M)[1]))


@pytest.mark.decoupled_only
def test_a_client_that_disconnects_mid_stream_frees_its_engine_slot(frontend, triton, tiny_engine):
    """A request that needs `tokens` engine steps (min_tokens = max_tokens); its client leaves after the first
    events. The engine must go idle within a second, having run far fewer steps than the request needed."""
    limits = json.loads((tiny_engine / "engine_config.json").read_text())["limits"]
    tokens = limits["max_seq_len"] - limits["max_input_len"]
    body = dict(model="ensemble", messages=HI, stream=True, temperature=0.0, max_tokens=tokens, min_tokens=tokens)
    engine = frontend.engine
    assert engine.wait_idle(30) is not None
    steps_before = _engine_steps(triton)
    with httpx.Client(base_url=frontend.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            events = (line for line in reply.iter_lines() if line)  # a blank line ends each event
            assert all(next(events).startswith("data: {") for _ in range(3))
        left = time.monotonic()  # the connection is closed here, the answer unread
    idle_after_s = engine.wait_idle(10)
    time.sleep(0.2)  # the counter is published by a stats thread; once idle it no longer moves
    steps = _engine_steps(triton) - steps_before
    assert idle_after_s is not None and time.monotonic() - left < 2.0, idle_after_s
    assert steps < tokens // 2, (steps, tokens)  # it ended because it was cancelled, not because it was done
