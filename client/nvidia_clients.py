"""What NVIDIA's own clients send, built from reading tensorrtllm_backend's inflight_batcher_llm/client scripts
(v0.13, v0.14 and v0.17 `end_to_end_grpc_client.py` at their argparse defaults, `inflight_batcher_llm_client.py`),
and how they read the answers. Used by tests/e2e to prove compatibility; not a client to use."""
import queue
from functools import partial

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from qwen_triton.vocab import ENDOFTEXT_ID, IM_END_ID

PROMPT = "What is machine learning?"


def e2e_client_inputs(version: str, prompt: str = PROMPT, streaming: bool = False, output_len: int = 24,
                      **extra) -> dict[str, np.ndarray]:
    """end_to_end_grpc_client.py's prepare_inputs at its defaults (beam_width 1, temperature 1.0); v0.14 also
    sends num_return_sequences, v0.17 exclude_input_in_output (False unless --exclude-input-in-output)."""
    input0 = [[prompt]]
    inputs = {"text_input": np.array(input0).astype(object),
              "max_tokens": np.ones_like(input0).astype(np.int32) * output_len,
              "stream": np.array([[streaming]], dtype=bool)}
    if version == "v0.14":
        inputs["num_return_sequences"] = np.array([[1]], dtype=np.int32)
    inputs["beam_width"] = np.array([[1]], dtype=np.int32)
    inputs["temperature"] = np.array([[1.0]], dtype=np.float32)
    if version == "v0.17":
        inputs["exclude_input_in_output"] = np.array([[False]], dtype=bool)
    inputs.update(extra)
    return inputs


def _tensor(name, value):
    t = grpcclient.InferInput(name, value.shape, np_to_triton_dtype(value.dtype))
    t.set_data_from_numpy(value)
    return t


def send(url, model, inputs, outputs=("text_output",)) -> list:
    """As the scripts do: start_stream, async_stream_infer, stop_stream, then drain the callback's queue."""
    results = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=partial(lambda q, result, error: q.put(error or result), results))
    requested = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
    client.async_stream_infer(model, [_tensor(k, v) for k, v in inputs.items()], outputs=requested, request_id="1")
    client.stop_stream()
    client.close()
    out = []
    while not results.empty():
        out.append(results.get())
    return out


def decode_text(results, streaming: bool) -> str:
    """end_to_end_grpc_client.py: output = result.as_numpy('text_output'); output[0].decode('utf-8'),
    appended per response when streaming; batch_index[0][0] when present."""
    text = ""
    for result in results:
        if isinstance(result, InferenceServerException):
            raise result
        output = result.as_numpy("text_output")
        batch_index = result.as_numpy("batch_index")
        assert (0 if batch_index is None else batch_index[0][0]) == 0
        text = text + output[0].decode("utf-8") if streaming else output[0].decode("utf-8")
    return text


def inflight_client_inputs(ids: list[int], streaming: bool, output_len: int = 16) -> dict[str, np.ndarray]:
    """inflight_batcher_llm_client.py's prepare_inputs at its defaults (top_k 1, top_p 0, temperature 1.0,
    beam_width 1), with --end-id/--pad-id given for Qwen."""
    return {"input_ids": np.array([ids], dtype=np.int32), "input_lengths": np.array([[len(ids)]], dtype=np.int32),
            "request_output_len": np.array([[output_len]], dtype=np.int32),
            "beam_width": np.array([[1]], dtype=np.int32), "temperature": np.array([[1.0]], dtype=np.float32),
            "streaming": np.array([[streaming]], dtype=bool), "end_id": np.array([[IM_END_ID]], dtype=np.int32),
            "pad_id": np.array([[ENDOFTEXT_ID]], dtype=np.int32), "runtime_top_k": np.array([[1]], dtype=np.int32),
            "runtime_top_p": np.array([[0.0]], dtype=np.float32)}
