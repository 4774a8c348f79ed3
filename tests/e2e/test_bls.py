"""tensorrt_llm_bls through a real tritonserver: NVIDIA's documented curl works and answers what the ensemble
answers, gRPC streams equal the ensemble's, bad input names its field, and a cancelled request frees the engine
(Triton 2.51 never cancels the BLS child request itself; docs/bls.md)."""
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from client.reliability import Server
from qwen_triton.client import QwenClient
from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine

pytestmark = [pytest.mark.e2e, pytest.mark.decoupled_only]
ROOT = Path(__file__).resolve().parents[2]
BLS = "tensorrt_llm_bls"
# tensorrtllm_backend's README: curl -X POST localhost:8000/v2/models/tensorrt_llm_bls/generate -d '...'
NVIDIA_BODY = {"text_input": "What is machine learning?", "max_tokens": 20, "bad_words": "", "stop_words": ""}


def _generate(triton, model, body):
    url = f"http://127.0.0.1:{triton.ports.http}/v2/models/{model}/generate"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def test_nvidias_curl_is_answered_and_equals_the_ensemble_when_greedy(triton):
    answer = _generate(triton, BLS, NVIDIA_BODY)  # as documented (sampling with the engine's defaults)
    assert answer["model_name"] == BLS and isinstance(answer["text_output"], str)
    greedy = dict(NVIDIA_BODY, temperature=0.0)
    via_bls, via_ensemble = _generate(triton, BLS, greedy), _generate(triton, "ensemble", greedy)
    assert via_bls["text_output"] == via_ensemble["text_output"] != ""
    for name in ("finish_reason", "num_input_tokens", "num_output_tokens"):
        assert via_bls[name] == via_ensemble[name]


def test_an_unknown_generate_key_is_refused_by_name_as_the_ensemble_refuses_it(triton):
    refusals = []
    for model in (BLS, "ensemble"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _generate(triton, model, dict(NVIDIA_BODY, max_token=20))
        refusals.append((refused.value.code, json.loads(refused.value.read())["error"]))
    (bls_code, bls_error), (ensemble_code, ensemble_error) = refusals
    assert bls_code == ensemble_code == 400 and bls_error.startswith("max_token: is not an input of this model")
    assert "max_token: is not an input of this model" in ensemble_error  # Triton prefixes the ensemble's step


@pytest.mark.parametrize("query", ["Tell me a story.", "用中文写一首关于春天的诗。🎉"])
def test_grpc_streams_and_answers_equal_the_ensembles(triton, query):
    url = f"127.0.0.1:{triton.ports.grpc}"
    with QwenClient(url, model=BLS) as bls, QwenClient(url) as ensemble:
        options = dict(max_tokens=48, temperature=0.0)
        chunks, expected = list(bls.stream(query, **options)), list(ensemble.stream(query, **options))
        assert len(chunks) > 1 and "".join(c.text for c in chunks) == "".join(c.text for c in expected)
        last, expected_last = chunks[-1], expected[-1]
        assert (last.finish_reason, last.num_input_tokens, last.num_output_tokens) == \
            (expected_last.finish_reason, expected_last.num_input_tokens, expected_last.num_output_tokens)
        assert all(c.finish_reason == "" for c in chunks[:-1])
        assert bls.generate(query, **options) == ensemble.generate(query, **options)


def test_concurrent_requests_each_get_their_own_answer(triton):
    url = f"127.0.0.1:{triton.ports.grpc}"
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(6)]
    with QwenClient(url) as ensemble:
        expected = [ensemble.generate(p, max_tokens=16, temperature=0.0).text for p in prompts]
    got = [None] * len(prompts)

    def run(i):
        with QwenClient(url, model=BLS) as c:
            got[i] = c.generate(prompts[i], max_tokens=16, temperature=0.0).text

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected


@pytest.mark.parametrize("field,options", [("top_p", dict(top_p=1.5)), ("history", dict(history="[[\"x\""))])
def test_bad_input_is_refused_naming_its_field_and_the_next_request_is_served(triton, field, options):
    with QwenClient(f"127.0.0.1:{triton.ports.grpc}", model=BLS) as bls:
        with pytest.raises(InferenceServerException) as info:
            bls.generate("Hello", **options)
        assert f"{field}:" in info.value.message()
        assert bls.generate("Hello", max_tokens=4, temperature=0.0).num_output_tokens > 0


@pytest.fixture(scope="module")
def long_server(long_engine, tmp_path_factory):
    """2,000 tokens take seconds on a CPU with this engine: a cancellation that never reached it shows."""
    root = tmp_path_factory.mktemp("bls_long")
    fill_repository(ROOT / "model_repository", values_for_engine(long_engine, device="cpu"), root / "repo")
    server = TritonServer(root / "repo", Ports.free(), log_file=root / "server.log", exit_timeout_s=5)
    with server:
        yield server


def test_a_cancelled_stream_frees_the_engine_within_two_seconds(long_server):
    probe = Server(f"127.0.0.1:{long_server.ports.grpc}", long_server.ports.metrics)
    assert probe.wait_idle(30) is not None
    with QwenClient(probe.grpc, model=BLS) as client:
        chunks = client.stream("Write a very long essay.", max_tokens=2000, min_tokens=2000, temperature=0.0)
        next(chunks)
        assert probe.wait_idle(2.0) is None  # it would still run: what a lost cancellation would wait out
        chunks.close()  # stop_stream(cancel_requests=True)
        idle_s = probe.wait_idle(2.0)
        assert idle_s is not None, "the cancelled BLS request still holds the engine"
        assert client.generate("Still there?", max_tokens=4, temperature=0.0).num_output_tokens > 0
    assert probe.wait_idle(5.0) is not None  # the gauges lag the last answer by up to a publish period


def _first_or_error(chunks):
    try:
        next(chunks, None)
    except InferenceServerException:  # the cancellation, as this client sees it
        pass


def test_a_cancelled_non_streamed_request_frees_the_engine_through_its_probes(long_server):
    probe = Server(f"127.0.0.1:{long_server.ports.grpc}", long_server.ports.metrics)
    assert probe.wait_idle(30) is not None
    with QwenClient(probe.grpc, model=BLS) as client:
        answer = client.stream("Write a very long essay.", max_tokens=2000, min_tokens=2000, temperature=0.0,
                               stream=False)
        reader = threading.Thread(target=_first_or_error, args=(answer,), daemon=True)
        reader.start()  # sends the request; its one response would come only at the end, seconds later
        deadline = time.monotonic() + 10
        while probe.busy() == 0:
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.01)
        time.sleep(0.5)  # well into generation: only tensorrt_llm's probes let the BLS model see the cancel
        client._close_stream(cancel_requests=True)
        idle_s = probe.wait_idle(2.0)
        reader.join(5)
    assert idle_s is not None, "the cancelled BLS request still holds the engine"
