"""model_repository/*/1/model.py driven in-process through the shared fake triton_python_backend_utils."""
import dataclasses
import json
import time

import numpy as np
import pytest
import triton_python_backend_utils as pb_utils

from qwen_triton.schema import PREPROCESSING, TENSORRT_LLM


def _config(name, decoupled=True, **params):
    return {"model_config": json.dumps({"name": name, "model_transaction_policy": {"decoupled": decoupled},
                                        "parameters": {k: {"string_value": v} for k, v in params.items()}})}


def _request(spec, **values):
    tensors = []
    for name, value in values.items():
        dtype = spec.input(name).numpy_dtype
        array = np.array(value if isinstance(value, list) else [value], dtype=dtype)
        tensors.append(pb_utils.Tensor(name, array[np.newaxis, ...]))
    return pb_utils.InferenceRequest(tensors)


def _out(response, name):
    return pb_utils.get_output_tensor_by_name(response, name).as_numpy()[0]


@pytest.fixture(scope="module")
def preprocessing(tiny_engine, model_py):
    model = model_py("preprocessing").TritonPythonModel()
    model.initialize(_config("preprocessing", engine_dir=str(tiny_engine)))
    return model


@pytest.fixture(scope="module")
def llm(tiny_engine, model_py):
    model = model_py("tensorrt_llm").TritonPythonModel()
    model.initialize(_config("tensorrt_llm", runtime="torch", engine_dir=str(tiny_engine), device="cpu", dtype=""))
    yield model
    model.finalize()


def test_preprocessing_answers_a_bad_request_alone(preprocessing):
    good = _request(PREPROCESSING, text_input=b"Hello", bad_words=[b"\n\n", b"User:"])
    bad = _request(PREPROCESSING, text_input=b"Hi", history=b"{not json")
    responses = preprocessing.execute([good, bad, good])
    assert not responses[0].has_error() and not responses[2].has_error()
    assert responses[1].has_error() and responses[1].error().code() == pb_utils.TritonError.INVALID_ARG
    assert "history" in responses[1].error().message()
    ids = _out(responses[0], "input_ids")
    assert _out(responses[0], "input_lengths")[0] == len(ids)
    assert _out(responses[0], "bad_words_list").shape[0] == 2
    assert ids[0] == 151644 and ids[-1] == 198  # <|im_start|> ... "assistant\n"


@pytest.fixture
def postprocessing(tiny_engine, model_py):
    model = model_py("postprocessing").TritonPythonModel()
    model.initialize(_config("postprocessing", engine_dir=str(tiny_engine)))
    return model


def test_postprocessing_decodes_and_strips_stop_tokens(postprocessing):
    from qwen_triton.text.tokenizer import QwenTokenizer

    ids = QwenTokenizer.load().encode("你好 world") + [151645, 151643]
    request = pb_utils.InferenceRequest([pb_utils.Tensor("tokens_batch", np.array([ids], dtype=np.int32)),
                                         pb_utils.Tensor("sequence_length", np.array([[len(ids)]], dtype=np.int32))])
    assert postprocessing.execute([request]) is None
    sender = request.get_response_sender()
    (response,) = sender.responses
    assert sender.flags == [pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL]
    text = pb_utils.get_output_tensor_by_name(response, "text_output").as_numpy()
    assert text.shape == (1,) and text[0].decode() == "你好 world"  # NVIDIA's shape: output[0].decode()


def _post_request(key, tokens=None, cancelled=False):
    tensors = [pb_utils.Tensor("request_key", np.array([[key]], dtype=np.uint64))]
    if tokens is not None:
        tensors += [pb_utils.Tensor("tokens_batch", np.array([tokens], dtype=np.int32)),
                    pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32))]
    request = pb_utils.InferenceRequest(tensors)
    request.get_response_sender().cancelled = cancelled
    return request


def test_postprocessing_stops_a_cancelled_request_once_and_answers_probes_with_the_flag_only(postprocessing,
                                                                                             monkeypatch):
    stops = []

    def tensorrt_llm(request):
        values = {t.name(): t.as_numpy() for t in request.inputs()}
        stops.append((bool(values["stop"][0, 0]), int(values["request_key"][0, 0])))
        return [pb_utils.InferenceResponse([])]

    monkeypatch.setitem(pb_utils.BLS_MODELS, "tensorrt_llm", tensorrt_llm)
    live_probe, probe, chunk, later = (_post_request(7), _post_request(9, cancelled=True),
                                       _post_request(9, tokens=[100, 101], cancelled=True), _post_request(9, cancelled=True))
    postprocessing.execute([live_probe, probe, chunk, later])
    assert stops == [(True, 9)]  # the live request's probe stops nothing; request 9 is stopped once
    for probe_request in (live_probe, probe, later):
        sender = probe_request.get_response_sender()
        assert sender.responses == [] and sender.flags == [pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL]
    (response,) = chunk.get_response_sender().responses  # a cancelled step is still answered, never failed
    assert not response.has_error() and pb_utils.get_output_tensor_by_name(response, "text_output").as_numpy()[0]


def _llm_request(preprocessing, text, **knobs):
    (pre,) = preprocessing.execute([_request(PREPROCESSING, text_input=text.encode())])
    # As a direct caller: cancel_probe_ms is the ensemble's opt-in (its requests are cancelled by a stop).
    values = {o.name: _out(pre, o.name) for o in PREPROCESSING.outputs
              if o.name != "cancel_probe_ms" and pb_utils.get_output_tensor_by_name(pre, o.name) is not None}
    values.update({"request_output_len": 12, **knobs})
    tensors = [pb_utils.Tensor(k, np.asarray(v, dtype=TENSORRT_LLM.input(k).numpy_dtype).reshape(1, -1)
                               if TENSORRT_LLM.input(k).dims != (2, -1) else np.asarray(v)[np.newaxis])
               for k, v in values.items()]
    return pb_utils.InferenceRequest(tensors)


def test_llm_streams_through_the_response_sender(preprocessing, llm):
    request = _llm_request(preprocessing, "Hello there", streaming=True, temperature=0.0)
    assert llm.execute([request]) is None
    sender = request.get_response_sender()
    assert sender.done.wait(60)
    assert sender.flags[-1] == pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    assert all(flag == 0 for flag in sender.flags[:-1])
    assert _out(sender.responses[-1], "finish_reason")[0] in (b"length", b"stop")
    total = sum(_out(r, "output_ids").size for r in sender.responses)
    assert total <= _out(sender.responses[-1], "num_output_tokens")[0] + 8  # stop-string re-encoding aside


def test_llm_rejects_bad_sampling_alone(preprocessing, llm):
    bad = _llm_request(preprocessing, "Hi", runtime_top_p=1.5)
    good = _llm_request(preprocessing, "Hi", temperature=0.0)
    llm.execute([bad, good])
    bad_sender, good_sender = bad.get_response_sender(), good.get_response_sender()
    assert bad_sender.done.wait(10) and good_sender.done.wait(60)
    (error,) = bad_sender.responses
    assert error.has_error() and "top_p" in error.error().message()
    assert error.error().code() == pb_utils.TritonError.INVALID_ARG
    assert not good_sender.responses[-1].has_error()


def test_llm_cancellation_ends_the_request(preprocessing, llm):
    request = _llm_request(preprocessing, "Hi", streaming=True, request_output_len=[400], min_tokens=[400])
    sender = request.get_response_sender()
    sender.cancelled = True
    llm.execute([request])
    assert sender.done.wait(30)
    assert _out(sender.responses[-1], "finish_reason")[0] == b"cancelled"
    assert _out(sender.responses[-1], "num_output_tokens")[0] < 400


def _responses_until_final(sender, timeout_s=30):
    assert sender.done.wait(timeout_s)
    return sender.responses


def test_llm_probes_a_silent_ensemble_request_and_stops_it_by_its_key(preprocessing, llm):
    request = _llm_request(preprocessing, "Hi", request_output_len=[480], min_tokens=[480], temperature=0.0,
                           cancel_probe_ms=[200])
    sender = request.get_response_sender()
    llm.execute([request])
    deadline = time.monotonic() + 20
    while not sender.responses:  # non-streaming: a probe is all it sends while it generates
        assert time.monotonic() < deadline, "no probe from a silent request"
        time.sleep(0.02)
    (probe,) = sender.responses[:1]
    assert [t.name() for t in probe.output_tensors()] == ["request_key"] and not sender.done.is_set()
    key = int(_out(probe, "request_key")[0])
    stop = _request(TENSORRT_LLM, input_ids=[0], input_lengths=np.int32(1), request_output_len=np.int32(1),
                    stop=True, request_key=np.uint64(key))
    llm.execute([stop])
    acknowledged = _responses_until_final(stop.get_response_sender(), 5)
    assert not any(r.has_error() for r in acknowledged)
    final = _responses_until_final(sender, 5)[-1]
    assert _out(final, "finish_reason")[0] == b"cancelled" and _out(final, "num_output_tokens")[0] < 480
    assert int(_out(final, "request_key")[0]) == key
    assert llm.service.engine.stats().running == 0


def test_llm_reports_engine_occupancy_as_gauges(llm):
    reporter = llm.service.engine.on_stats  # the engine thread only hands stats to the reporter thread
    gauges = reporter.publish.gauges
    assert set(gauges) == {"running", "waiting", "free_kv_blocks", "reused_kv_blocks", "missed_kv_blocks"}
    stats = llm.service.engine.stats()
    reporter.publish(stats)  # raises if the families were freed, as the real backend does
    assert gauges["free_kv_blocks"].value() == stats.free_kv_blocks > 0
    reporter.publish(dataclasses.replace(stats, reused_kv_blocks=5, missed_kv_blocks=None))  # None: left as it was
    assert gauges["reused_kv_blocks"].value() == 5 and gauges["missed_kv_blocks"].value() == stats.missed_kv_blocks
    reporter(dataclasses.replace(stats, waiting=7))
    deadline = time.monotonic() + 5
    while gauges["waiting"].value() != 7:
        assert time.monotonic() < deadline, "the reporter thread did not publish"
        time.sleep(0.01)


def test_llm_observes_time_to_first_response_once_per_request(preprocessing, llm):
    histogram = llm.service.engine.on_stats.publish.first_response
    before = len(histogram.observed)
    requests = [_llm_request(preprocessing, "Hi", streaming=True, temperature=0.0) for _ in range(2)]
    started = time.perf_counter()
    llm.execute(requests)
    assert all(r.get_response_sender().done.wait(60) for r in requests)
    elapsed = time.perf_counter() - started
    new = histogram.observed[before:]
    assert len(new) == 2 and all(0 < s <= elapsed for s in new)
    assert list(histogram.buckets) == sorted(histogram.buckets)


def _published_nv(metrics):
    """{family: {category label value: value}} as the fake backend holds them; labels checked on the way."""
    out = {}
    for name, family in metrics.nv.families.items():
        for metric in family.metrics:
            (category,) = set(metric.labels) - {"model", "version"}
            assert (metric.labels["model"], metric.labels["version"]) == ("tensorrt_llm", "1")
            out.setdefault(name, {})[metric.labels[category]] = metric.value()
    return out


def _direct_llm_request(streaming):
    """Straight to tensorrt_llm, as a client of that model alone: 12 tokens, none of them a stop token."""
    return _request(TENSORRT_LLM, input_ids=[9707, 1052], input_lengths=np.int32(2), request_output_len=np.int32(12),
                    min_tokens=np.int32(12), temperature=np.float32(0.0), streaming=streaming)


def test_llm_publishes_nvidia_families_for_the_torch_runtime(llm):
    reporter = llm.service.engine.on_stats
    request = _direct_llm_request(streaming=False)
    llm.execute([request])
    assert request.get_response_sender().done.wait(60)
    stats = llm.service.engine.stats()
    deadline = time.monotonic() + 5
    while _published_nv(reporter.publish).get("nv_trt_llm_general_metrics", {}).get("iteration_counter") \
            != stats.iteration:
        assert time.monotonic() < deadline, "the reporter thread did not publish the last step"
        time.sleep(0.01)
    published = _published_nv(reporter.publish)
    assert {name: set(labels) for name, labels in published.items()} == {
        "nv_trt_llm_request_metrics": {"active", "max", "scheduled", "context", "waiting"},
        "nv_trt_llm_kv_cache_block_metrics": {"max", "free", "used", "tokens_per", "fraction"},
        "nv_trt_llm_inflight_batcher_metrics": {"total_context_tokens", "generation_requests", "paused_requests"},
        "nv_trt_llm_general_metrics": {"iteration_counter", "timestamp"},
    }  # no runtime memory counters nor micro batch id: the torch engine has neither
    kv = published["nv_trt_llm_kv_cache_block_metrics"]
    assert kv["max"] == stats.max_kv_blocks and kv["free"] == stats.free_kv_blocks == kv["max"] - kv["used"]
    assert published["nv_trt_llm_request_metrics"]["max"] == stats.max_running > 0
    assert abs(published["nv_trt_llm_general_metrics"]["timestamp"] - time.time()) < 60


def test_llm_observes_inter_token_latency_between_streamed_responses(llm):
    histogram = llm.service.engine.on_stats.publish.inter_token
    assert list(histogram.buckets) == sorted(histogram.buckets)
    time.sleep(0.3)  # earlier tests' gaps, still queued in the SampledObserver, are observed by now
    before = len(histogram.observed)
    plain = _direct_llm_request(streaming=False)
    llm.execute([plain])
    assert plain.get_response_sender().done.wait(60)
    streamed = _direct_llm_request(streaming=True)
    llm.execute([streamed])
    sender = streamed.get_response_sender()
    assert sender.done.wait(60)
    with_tokens = sum(1 for r in sender.responses if np.asarray(_out(r, "output_ids")).size)
    assert with_tokens >= 2, "too few streamed responses to measure a gap"
    # Observed off the outbox thread, at most 64 per period (SampledObserver): every gap of a short stream, a
    # sample of a long one's; a non-streamed request has no gap.
    expected = min(with_tokens - 1, llm.service.outbox._on_inter_token.per_period)
    deadline = time.monotonic() + 5
    while len(histogram.observed) - before < expected:
        assert time.monotonic() < deadline, f"{len(histogram.observed) - before} gaps for {with_tokens} responses"
        time.sleep(0.01)
    time.sleep(0.3)
    assert expected <= len(histogram.observed) - before <= with_tokens - 1
    assert all(s >= 0 for s in histogram.observed[before:])


def test_preprocessing_refuses_unknown_parameters_by_name(preprocessing):
    """Triton's HTTP generate passes a JSON key that is not an input as a request parameter."""
    typo = pb_utils.InferenceRequest([pb_utils.Tensor("text_input", np.array([[b"Hi"]], dtype=np.object_))],
                                     parameters={"max_token": 8})
    fine = pb_utils.InferenceRequest([pb_utils.Tensor("text_input", np.array([[b"Hi"]], dtype=np.object_))],
                                     parameters={"Streaming": False})
    refused, served = preprocessing.execute([typo, fine])
    assert refused.has_error() and refused.error().message().startswith("max_token: is not an input")
    assert refused.error().code() == pb_utils.TritonError.INVALID_ARG
    assert not served.has_error()


def test_postprocessing_passes_tensorrt_llm_text_on_without_decoding(postprocessing):
    """A token is decoded once: given tensorrt_llm's text, postprocessing sends it rather than decoding the ids."""
    request = pb_utils.InferenceRequest([
        pb_utils.Tensor("tokens_batch", np.array([[[100, 101]]], dtype=np.int32)),
        pb_utils.Tensor("text", np.array([["already decoded".encode()]], dtype=np.object_))])
    postprocessing.execute([request])
    (response,) = request.get_response_sender().responses
    assert pb_utils.get_output_tensor_by_name(response, "text_output").as_numpy().tolist() == [b"already decoded"]
