"""End to end through a real tritonserver: contract, streaming, concurrency, cancellation, bad input."""
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.server_metrics import gauge, histogram, histogram_delta_ms, scrape
from qwen_triton.client import QwenClient
from qwen_triton.schema import POSTPROCESSING, PREPROCESSING, TENSORRT_LLM
from qwen_triton.serving.responses import FIRST_RESPONSE_METRIC

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GREEDY = dict(temperature=0.0, max_tokens=24)


@pytest.fixture
def client(triton):
    c = QwenClient(f"127.0.0.1:{triton.ports.grpc}")
    yield c
    c.close()


def _infer(grpc, spec, values):
    inputs = []
    for name, array in values.items():
        tensor = grpcclient.InferInput(name, [1, *array.shape], spec.input(name).wire_dtype)
        tensor.set_data_from_numpy(array[np.newaxis, ...])
        inputs.append(tensor)
    return grpc.infer(spec.name, inputs)


def _stream(grpc, spec, values, output="output_ids"):
    """Responses of a decoupled model that carry `output` (a probe, which carries only request_key, does not)."""
    replies = queue.Queue()
    grpc.start_stream(callback=lambda result, error: replies.put((result, error)))
    inputs = []
    for name, array in values.items():
        tensor = grpcclient.InferInput(name, [1, *array.shape], spec.input(name).wire_dtype)
        tensor.set_data_from_numpy(array[np.newaxis, ...])
        inputs.append(tensor)
    grpc.async_stream_infer(spec.name, inputs, enable_empty_final_response=True)
    results = []
    while True:
        result, error = replies.get(timeout=60)
        assert error is None, error
        if result.as_numpy(output) is not None:
            results.append(result)
        if result.get_response().parameters["triton_final_response"].bool_param:
            grpc.stop_stream()
            return results


def test_ensemble_equals_the_three_models_called_by_hand(triton, client):
    query = "你好，请介绍一下你自己。"
    via_ensemble = client.generate(query, **GREEDY)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{triton.ports.grpc}")
    pre = _infer(grpc, PREPROCESSING, {"text_input": np.array([query.encode()], dtype=np.object_)})
    llm_inputs = {o.name: pre.as_numpy(o.name)[0] for o in PREPROCESSING.outputs if pre.as_numpy(o.name) is not None}
    # What the ensemble wires straight from the client to tensorrt_llm (GREEDY's max_tokens and temperature).
    llm_inputs["request_output_len"] = np.array([GREEDY["max_tokens"]], dtype=np.int32)
    llm_inputs["temperature"] = np.array([0.0], dtype=np.float32)
    (llm,) = _stream(grpc, TENSORRT_LLM, llm_inputs)
    (post,) = _stream(grpc, POSTPROCESSING, {"tokens_batch": llm.as_numpy("output_ids")[0],
                                             "sequence_length": llm.as_numpy("sequence_length")[0]}, "text_output")
    assert post.as_numpy("text_output")[0].decode() == via_ensemble.text  # [1], as NVIDIA's postprocessing
    assert llm.as_numpy("finish_reason")[0, 0].decode() == via_ensemble.finish_reason
    assert int(llm.as_numpy("num_input_tokens")[0, 0]) == via_ensemble.num_input_tokens == len(llm_inputs["input_ids"])
    assert via_ensemble.num_output_tokens > 0


@pytest.mark.decoupled_only
@pytest.mark.parametrize("query", ["Tell me a story.", "用中文写一首关于春天的诗。", "emoji 🎉🚀 test"])
def test_streamed_chunks_concatenate_to_the_non_streamed_text(client, query):
    whole = client.generate(query, max_tokens=48, temperature=0.0)
    chunks = list(client.stream(query, max_tokens=48, temperature=0.0))
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].num_output_tokens == whole.num_output_tokens
    assert all(c.finish_reason == "" for c in chunks[:-1])


def test_sixteen_concurrent_greedy_requests_match_serial(triton):
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(16)]
    url = f"127.0.0.1:{triton.ports.grpc}"
    serial = [QwenClient(url).generate(p, **GREEDY).text for p in prompts]
    concurrent = [None] * 16

    def run(i):
        with QwenClient(url) as c:
            try:
                concurrent[i] = c.generate(prompts[i], **GREEDY).text
            except Exception as exc:  # shown in the assertion's diff
                concurrent[i] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert concurrent == serial


def test_seeded_sampling_is_reproducible(client):
    options = dict(max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    assert client.generate("Say something.", **options).text == client.generate("Say something.", **options).text


def test_max_tokens_and_stop_words(client):
    first = client.generate("Count to ten.", max_tokens=8, min_tokens=8, temperature=0.0)
    assert first.finish_reason == "length" and first.num_output_tokens == 8
    stop = first.text[len(first.text) // 2:][:3]
    stopped = client.generate("Count to ten.", max_tokens=8, min_tokens=8, temperature=0.0, stop_words=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == first.text[: first.text.index(stop)]


@pytest.mark.decoupled_only
def test_cancelled_stream_frees_its_slot_and_the_server_keeps_serving(triton, client):
    url = f"127.0.0.1:{triton.ports.grpc}"
    cancelled = QwenClient(url)
    stream = cancelled.stream("Write a very long essay.", max_tokens=480, min_tokens=480, temperature=0.0)
    next(stream)
    stream.close()  # stop_stream(cancel_requests=True): the server sees the cancellation
    cancelled.close()
    deadline = time.monotonic() + 20
    while _running_requests(triton) != 0:
        assert time.monotonic() < deadline, "cancelled request still holds a batch slot"
        time.sleep(0.2)
    assert client.generate("Still there?", **GREEDY).num_output_tokens > 0


@pytest.mark.decoupled_only
def test_a_client_keeps_its_stream_and_opens_a_new_one_after_an_early_stop(triton):
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}") as c:
        opened = []
        start_stream = c.grpc.start_stream
        c.grpc.start_stream = lambda **kw: opened.append(1) or start_stream(**kw)
        first = c.generate("Say hi.", **GREEDY)
        assert c.generate("Say hi.", **GREEDY) == first and len(opened) == 1
        stream = c.stream("Write a very long essay.", max_tokens=400, min_tokens=400, temperature=0.0)
        next(stream)
        stream.close()  # cancels it with its stream: none of its late responses reach the next request
        assert c.generate("Say hi.", **GREEDY) == first and len(opened) == 2


def _running_requests(triton) -> float:
    return gauge(scrape(triton.ports.metrics), "qwen_engine_running_requests")


@pytest.mark.decoupled_only
def test_time_to_first_response_histogram_counts_each_request(triton, client):
    before = histogram(scrape(triton.ports.metrics), FIRST_RESPONSE_METRIC)
    for _ in range(3):
        assert list(client.stream("Say hi.", **dict(GREEDY, max_tokens=4)))
    delta = histogram_delta_ms(before, histogram(scrape(triton.ports.metrics), FIRST_RESPONSE_METRIC))
    assert delta["count"] == 3 and delta["mean_ms"] > 0 and delta["p90_ms_at_most"] is not None


BAD_INPUTS = [
    ("text_input", dict(text_input="   ")),
    ("text_input", dict(text_input="word " * 400)),
    ("max_tokens", dict(max_tokens=0)),
    ("top_p", dict(top_p=1.5)),
    ("top_p", dict(top_p=-0.1)),  # 0 is accepted: TensorRT-LLM's "off"
    ("temperature", dict(temperature=-1.0)),
    ("top_k", dict(top_k=-3)),
    ("history", dict(history="[[\"unterminated\"")),
    ("text_input", dict(text_input=b"\xff\xfe bad utf-8")),
]


@pytest.mark.parametrize("field,options", BAD_INPUTS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_INPUTS)])
def test_bad_input_gets_a_clear_error_and_the_next_request_is_served(client, field, options):
    options = dict(options)
    text = options.pop("text_input", "Hello")
    with pytest.raises(InferenceServerException) as info:
        client.generate(text, **options)
    # Stream errors carry the message only (no status code on the gRPC stream); it names the field.
    assert f"{field}:" in info.value.message()
    assert client.generate("Hello", **GREEDY).num_output_tokens > 0


def test_history_in_both_formats_gives_the_same_answer(client):
    pairs = [["Hi", "Hello! How can I help?"]]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    a = client.generate("And now?", history=pairs, **GREEDY)
    b = client.generate("And now?", history=json.dumps(messages), **GREEDY)
    assert a.text == b.text and a.num_input_tokens == b.num_input_tokens


def test_unary_call_to_preprocessing_reports_invalid_argument(triton):
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{triton.ports.grpc}")
    with pytest.raises(InferenceServerException) as info:
        _infer(grpc, PREPROCESSING, {"text_input": np.array([b"hi"], dtype=np.object_),
                                     "history": np.array([b"[1, 2"], dtype=np.object_)})
    assert "INVALID_ARGUMENT" in str(info.value.status()) and "history:" in info.value.message()


@pytest.mark.decoupled_only
def test_chat_cli_answers_two_turns_and_exits(triton):
    run = subprocess.run([sys.executable, "-m", "client.chat", "--url", f"127.0.0.1:{triton.ports.grpc}",
                          "--max-tokens", "8", "--temperature", "0"], input="Hello\nAnd again?\n\n",
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("assistant> ") == 2 and run.stderr.count("output tokens]") == 2
