"""What NVIDIA's own clients send, built from reading tensorrtllm_backend's inflight_batcher_llm/client scripts
(v0.13, v0.14, v0.17 `end_to_end_grpc_client.py` with their argparse defaults; `inflight_batcher_llm_client.py`),
sent to the real server and decoded the way those scripts decode it."""
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client.nvidia_clients import PROMPT, decode_text, e2e_client_inputs, inflight_client_inputs, send
from qwen_triton.text.tokenizer import QwenTokenizer

pytestmark = pytest.mark.e2e


@pytest.fixture
def url(triton):
    return f"127.0.0.1:{triton.ports.grpc}"


@pytest.mark.parametrize("streaming", [False, pytest.param(True, marks=pytest.mark.decoupled_only)])
@pytest.mark.parametrize("version", ["v0.13", "v0.14", "v0.17"])
def test_end_to_end_client_defaults(url, version, streaming):
    results = send(url, "ensemble", e2e_client_inputs(version, streaming=streaming))
    text = decode_text(results, streaming)
    assert text.strip()
    if version == "v0.17" and not streaming:  # it checks `prompt + expected` when the input is not excluded
        assert text.startswith(PROMPT) and len(text) > len(PROMPT)
    else:
        assert not text.startswith(PROMPT)


def test_batch_inputs_request_names_batch_index(url):
    """--batch-inputs stacks prompts into one request and asks for batch_index: one prompt is served, two are
    refused by name (one request, one row)."""
    one = e2e_client_inputs("v0.17")
    results = send(url, "ensemble", one, outputs=("text_output", "batch_index"))
    assert results[-1].as_numpy("batch_index").tolist() == [[0]]
    two = {k: np.concatenate([v, v]) for k, v in e2e_client_inputs("v0.17").items()}
    (error,) = send(url, "ensemble", two, outputs=("text_output", "batch_index"))
    assert isinstance(error, InferenceServerException) and "batch of 2" in str(error)


def _greedy(**extra):
    return e2e_client_inputs("v0.17", exclude_input_in_output=np.array([[True]]), temperature=np.array(
        [[0.0]], dtype=np.float32), **extra)


@pytest.mark.parametrize("streaming", [False, pytest.param(True, marks=pytest.mark.decoupled_only)])
def test_return_log_probs(url, streaming):
    inputs = _greedy(return_log_probs=np.array([[True]]), stream=np.array([[streaming]]))
    results = send(url, "ensemble", inputs, outputs=("text_output", "cum_log_probs", "output_log_probs"))
    cum = [r.as_numpy("cum_log_probs") for r in results]
    per_token = [r.as_numpy("output_log_probs") for r in results]
    assert all(c.shape == (1, 1) for c in cum) and all(p.ndim == 3 and p.shape[:2] == (1, 1) for p in per_token)
    values = np.concatenate([p.reshape(-1) for p in per_token])
    assert values.size > 0 and np.all(values <= 0) and np.all(np.isfinite(values))
    # The stop token is scored in the cumulative sum but released in no response.
    assert cum[-1][0, 0] <= values.sum() + 1e-4
    if streaming:
        whole = send(url, "ensemble", _greedy(return_log_probs=np.array([[True]])),
                     outputs=("text_output", "output_log_probs"))
        assert np.allclose(whole[-1].as_numpy("output_log_probs").reshape(-1), values, atol=1e-4)


def test_embedding_bias_steers_the_first_token(url):
    tokenizer = QwenTokenizer.load()
    plain = decode_text(send(url, "ensemble", _greedy()), False)
    first = tokenizer.decode(tokenizer.encode(plain)[:1])
    banned = decode_text(send(url, "ensemble", _greedy(
        embedding_bias_words=np.array([[first]], dtype=object),
        embedding_bias_weights=np.array([[-1000.0]], dtype=np.float32))), False)
    assert plain and not banned.startswith(first)
    forced = decode_text(send(url, "ensemble", _greedy(
        embedding_bias_words=np.array([[" banana"]], dtype=object),
        embedding_bias_weights=np.array([[1000.0]], dtype=np.float32))), False)
    assert forced.startswith(" banana")


def test_old_names_random_seed_and_min_length(url):
    sampled = lambda **kw: decode_text(send(url, "ensemble", e2e_client_inputs(  # noqa: E731
        "v0.17", exclude_input_in_output=np.array([[True]]), **kw)), False)
    seed = {"random_seed": np.array([[42]], dtype=np.uint64)}
    assert sampled(**seed) == sampled(**seed) == sampled(seed=np.array([[42]], dtype=np.uint64))
    results = send(url, "ensemble", _greedy(min_length=np.array([[20]], dtype=np.int32)),
                   outputs=("text_output", "num_output_tokens"))
    assert results[-1].as_numpy("num_output_tokens").reshape(-1)[0] >= 20
    (error,) = send(url, "ensemble", _greedy(random_seed=np.array([[1]], dtype=np.uint64),
                                             seed=np.array([[2]], dtype=np.uint64)))
    assert isinstance(error, InferenceServerException) and "random_seed" in str(error)


@pytest.mark.parametrize("name, value", [
    ("beam_width", np.array([[2]], dtype=np.int32)),
    ("num_return_sequences", np.array([[3]], dtype=np.int32)),
    ("return_context_logits", np.array([[True]])),
    ("return_generation_logits", np.array([[True]])),
    ("return_kv_cache_reuse_stats", np.array([[True]])),
    ("lora_task_id", np.array([[7]], dtype=np.uint64)),
    ("prompt_embedding_table", np.zeros((1, 2, 8), dtype=np.float16)),
    ("decoder_text_input", np.array([["hello"]], dtype=object)),
    ("guided_decoding_guide_type", np.array([["json"]], dtype=object)),
])
def test_what_the_engine_cannot_do_is_refused_by_name(url, name, value):
    (error,) = send(url, "ensemble", _greedy(**{name: value}))
    # A stream error carries no gRPC status, only Triton's message: "<field>: <why>".
    assert isinstance(error, InferenceServerException) and f"{name}: " in str(error), str(error)


def test_length_penalty_is_accepted_without_effect(url):
    plain = decode_text(send(url, "ensemble", _greedy()), False)
    assert decode_text(send(url, "ensemble", _greedy(length_penalty=np.array([[2.0]], dtype=np.float32))),
                       False) == plain


@pytest.mark.decoupled_only
def test_inflight_batcher_client_streams_from_tensorrt_llm(url):
    """Its streaming path: no outputs named (all come back); tokens = list(output_ids[0][0]) per response,
    sequence_length[0][0]; the greedy tokens equal a non-streamed request's."""
    ids = QwenTokenizer.load().encode(PROMPT)
    tokens = []
    for result in send(url, "tensorrt_llm", inflight_client_inputs(ids, True), outputs=None):
        if result.as_numpy("output_ids") is None:
            continue  # the final flag alone
        if result.as_numpy("sequence_length")[0][0] > 0:
            tokens += list(result.as_numpy("output_ids")[0][0])
    (whole,) = [r for r in send(url, "tensorrt_llm", inflight_client_inputs(ids, False), outputs=None)
                if r.as_numpy("output_ids") is not None]
    assert tokens and tokens == list(whole.as_numpy("output_ids")[0][0])
    assert whole.as_numpy("sequence_length")[0][0] == len(tokens)


def test_http_generate_refuses_an_unknown_key_and_takes_the_old_names(triton):
    import json
    import urllib.error
    import urllib.request

    def generate(body):
        request = urllib.request.Request(f"http://127.0.0.1:{triton.ports.http}/v2/models/ensemble/generate",
                                         data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read())

    with pytest.raises(urllib.error.HTTPError) as refused:
        generate({"text_input": PROMPT, "max_tokens": 8, "random_sede": 42})
    assert refused.value.code == 400 and "random_sede: is not an input" in refused.value.read().decode()
    body = {"text_input": PROMPT, "max_tokens": 8, "random_seed": 42, "temperature": 1.0}
    assert generate(body)["text_output"] == generate(body)["text_output"]
