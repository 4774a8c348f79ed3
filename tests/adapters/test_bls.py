"""model_repository/tensorrt_llm_bls/1/model.py driven in-process through the fake triton_python_backend_utils:
it answers what the ensemble path answers (preprocessing, tensorrt_llm and postprocessing model.py files wired
by hand as the filled ensemble config wires them), a bad request fails alone, a cancelled one stops
tensorrt_llm once by its request_key and ends, and requests beyond its bound are refused."""
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import triton_python_backend_utils as pb_utils

from qwen_triton.schema import TENSORRT_LLM_BLS

ROOT = Path(__file__).resolve().parents[2]
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _config(name, **params):
    return {"model_config": json.dumps({"name": name, "model_transaction_policy": {"decoupled": True},
                                        "parameters": {k: {"string_value": v} for k, v in params.items()}})}


def _client_tensors(values):
    """Client values (no batch dimension) -> tensors as Triton hands them to a model: [1, *dims]."""
    tensors = {}
    for name, value in values.items():
        array = np.asarray(value if isinstance(value, list) else [value], dtype=TENSORRT_LLM_BLS.input(name).numpy_dtype)
        tensors[name] = array[np.newaxis, ...]
    return tensors


def _served_by(model, timeout_s=60):
    """A BLS route to a decoupled model.py: what it sends for one request."""
    def call(request):
        model.execute([request])
        sender = request.get_response_sender()
        assert sender.done.wait(timeout_s)
        return list(sender.responses)
    return call


@pytest.fixture(scope="module")
def models(tiny_engine, model_py):
    pre = model_py("preprocessing").TritonPythonModel()
    pre.initialize(_config("preprocessing", engine_dir=str(tiny_engine)))
    llm = model_py("tensorrt_llm").TritonPythonModel()
    llm.initialize(_config("tensorrt_llm", runtime="torch", engine_dir=str(tiny_engine), device="cpu", dtype=""))
    post = model_py("postprocessing").TritonPythonModel()
    post.initialize(_config("postprocessing", engine_dir=str(tiny_engine)))
    bls = model_py("tensorrt_llm_bls").TritonPythonModel()
    bls.initialize(_config("tensorrt_llm_bls", engine_dir=str(tiny_engine)))
    yield pre, llm, post, bls
    bls.finalize()
    llm.finalize()


@pytest.fixture(scope="module")
def wiring(tmp_path_factory):
    """The filled ensemble config's steps: the ensemble path as Triton would run it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from qwen_triton.tools.fill_templates import TemplateValues, fill_repository

    out = tmp_path_factory.mktemp("repo")
    fill_repository(ROOT / "model_repository", TemplateValues(engine_dir="/e", max_batch_size=4), out)
    config = text_format.Parse((out / "ensemble" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {step.model_name: step for step in config.ensemble_scheduling.step}


@pytest.fixture
def routed(models, monkeypatch):
    monkeypatch.setitem(pb_utils.BLS_MODELS, "tensorrt_llm", _served_by(models[1]))


def _step(step, tensors):
    """A step's request from the ensemble's tensors (absent ones are not sent)."""
    return pb_utils.InferenceRequest([pb_utils.Tensor(key, tensors[source]) for key, source in step.input_map.items()
                                      if source in tensors])


def _ensemble(models, wiring, values):
    """What the ensemble sends a client for one request: its responses, in order (an error alone)."""
    pre, llm, post, _ = models
    tensors = _client_tensors(values)
    (pre_response,) = pre.execute([_step(wiring["preprocessing"], tensors)])
    if pre_response.has_error():
        return [pre_response]
    tensors.update((wiring["preprocessing"].output_map[t.name()], t.as_numpy()) for t in pre_response.output_tensors())
    sent = []
    for response in _served_by(llm)(_step(wiring["tensorrt_llm"], tensors)):
        if response.has_error():
            return [response]
        produced = {wiring["tensorrt_llm"].output_map[t.name()]: t.as_numpy() for t in response.output_tensors()}
        post_request = _step(wiring["postprocessing"], produced)
        post.execute([post_request])
        sent += post_request.get_response_sender().responses
    return sent


def _bls(models, values, cancelled=False):
    request = pb_utils.InferenceRequest([pb_utils.Tensor(k, v) for k, v in _client_tensors(values).items()])
    request.get_response_sender().cancelled = cancelled
    assert models[3].execute([request]) is None
    return request.get_response_sender()


def _done(sender, timeout_s=60):
    assert sender.done.wait(timeout_s)
    assert sender.flags[-1] == FINAL and all(flag == 0 for flag in sender.flags[:-1])
    return sender.responses


def _out(response, name):
    return pb_utils.get_output_tensor_by_name(response, name).as_numpy()


def _text(responses):
    return "".join(_out(r, "text_output")[0].decode() for r in responses)


def _layout(response):
    return {t.name(): (t.as_numpy().shape, t.as_numpy().dtype) for t in response.output_tensors()}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("query", ["Tell me a story.", "用中文写一首诗 🎉"])
def test_bls_answers_what_the_ensemble_answers(models, wiring, routed, stream, query):
    values = dict(text_input=query.encode(), max_tokens=np.int32(24), temperature=np.float32(0.0), stream=stream)
    expected = _ensemble(models, wiring, values)
    got = _done(_bls(models, values))
    assert not any(r.has_error() for r in got + expected)
    assert _text(got) == _text(expected)
    assert (len(got) > 1) if stream else (len(got) == 1)
    assert [_layout(r) for r in got[-1:]] == [_layout(r) for r in expected[-1:]]  # names, shapes, dtypes
    for name in ("finish_reason", "num_input_tokens", "num_output_tokens"):
        assert _out(got[-1], name).tolist() == _out(expected[-1], name).tolist()
    assert all(_out(r, "finish_reason")[0] == b"" for r in got[:-1])


def test_a_bad_request_fails_alone_naming_its_field(models, wiring, routed):
    bad_history = _bls(models, dict(text_input=b"Hi", history=b"{not json"))  # refused by preprocessing
    bad_top_p = _bls(models, dict(text_input=b"Hi", top_p=np.float32(1.5)))  # refused by tensorrt_llm
    good = _bls(models, dict(text_input=b"Hi", max_tokens=np.int32(8), temperature=np.float32(0.0)))
    for sender, field in ((bad_history, "history"), (bad_top_p, "top_p")):
        (error,) = _done(sender, 10)
        assert error.has_error() and error.error().code() == pb_utils.TritonError.INVALID_ARG
        assert error.error().message().startswith(f"{field}:")
    (ensemble_error,) = _ensemble(models, wiring, dict(text_input=b"Hi", top_p=np.float32(1.5)))
    assert _done(bad_top_p)[0].error().message() == ensemble_error.error().message()  # tensorrt_llm's own text
    (answer,) = _done(good)
    assert not answer.has_error() and _out(answer, "num_output_tokens")[0, 0] > 0
    # HTTP generate turns a JSON key that is no input into a request parameter: refused by name, as preprocessing does.
    misspelt = pb_utils.InferenceRequest([pb_utils.Tensor(k, v) for k, v in _client_tensors(dict(text_input=b"Hi")).items()],
                                         parameters={"max_token": 4})
    models[3].execute([misspelt])
    (error,) = _done(misspelt.get_response_sender(), 10)
    assert error.error().code() == pb_utils.TritonError.INVALID_ARG and error.error().message().startswith("max_token:")


KEY = 0x5EED_0F_0001


def _scripted_llm(calls):
    """tensorrt_llm as a script: a probe, a chunk, another probe, a final chunk (all tagged KEY); a stop is
    acknowledged with the final flag alone (an empty response, as the real BLS iterator yields it)."""
    def tensorrt_llm(request):
        values = {t.name(): t.as_numpy() for t in request.inputs()}
        calls.append(values)
        if "stop" in values:
            return [pb_utils.InferenceResponse([])]
        key = pb_utils.Tensor("request_key", np.array([[KEY]], dtype=np.uint64))

        def chunk(ids, finish):
            return pb_utils.InferenceResponse([
                pb_utils.Tensor("output_ids", np.array([[ids]], dtype=np.int32)),
                pb_utils.Tensor("sequence_length", np.array([[len(ids)]], dtype=np.int32)),
                pb_utils.Tensor("finish_reason", np.array([[finish]], dtype=np.object_)), key])
        return [pb_utils.InferenceResponse([key]), chunk([9707], b""), pb_utils.InferenceResponse([key]),
                chunk([1879], b"length")]
    return tensorrt_llm


@pytest.mark.parametrize("before_first_response", [True, False])
def test_a_cancelled_request_stops_tensorrt_llm_once_by_its_key_and_ends(models, monkeypatch, before_first_response):
    calls = []
    monkeypatch.setitem(pb_utils.BLS_MODELS, "tensorrt_llm", _scripted_llm(calls))
    request = pb_utils.InferenceRequest([pb_utils.Tensor(k, v) for k, v in
                                         _client_tensors(dict(text_input=b"Hi", stream=True)).items()])
    sender = request.get_response_sender()
    sender.cancelled = before_first_response
    send = sender.send

    def cancel_after_the_first_chunk(response=None, flags=0):
        send(response, flags)
        sender.cancelled = True

    sender.send = cancel_after_the_first_chunk
    models[3].execute([request])
    responses = _done(sender, 10)
    assert len(responses) == (0 if before_first_response else 1)  # nothing after the cancellation is sent
    generate, *stops = calls
    assert int(generate["cancel_probe_ms"][0, 0]) > 0 and bool(generate["streaming"][0, 0])
    assert [(bool(s["stop"][0, 0]), int(s["request_key"][0, 0])) for s in stops] == [(True, KEY)]


def test_requests_beyond_the_bound_are_refused_unavailable_and_execute_never_waits(tiny_engine, monkeypatch):
    from qwen_triton.serving.bls import BlsPipeline

    release = threading.Event()
    monkeypatch.setitem(pb_utils.BLS_MODELS, "tensorrt_llm",
                        lambda request: [pb_utils.InferenceResponse([])] if release.wait(30) else [])
    pipeline = BlsPipeline.from_engine_dir(str(tiny_engine))
    assert pipeline.max_active == 4 * 16  # the tiny engine's max_batch_size (tests/conftest.py TEST_LIMITS)
    pipeline.max_active = 1
    first, second = (pb_utils.InferenceRequest([pb_utils.Tensor(k, v) for k, v in
                                                _client_tensors(dict(text_input=b"Hi")).items()]) for _ in range(2))
    pipeline.submit(first)
    pipeline.submit(second)
    (refused,) = _done(second.get_response_sender(), 1)
    assert refused.error().code() == pb_utils.TritonError.UNAVAILABLE
    assert not first.get_response_sender().done.is_set()  # still served, on its own thread
    release.set()
    assert _done(first.get_response_sender(), 10) == []
    pipeline.close()
    assert not pipeline._threads
