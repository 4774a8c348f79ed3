"""gRPC client for the ensemble: one request builder (checked against the wire schema) used by the chat
CLI, the load test's input file and the tests. Non-streaming requests also go over the gRPC stream
because the ensemble contains a decoupled model (unary ModelInfer refuses decoupled models)."""
from __future__ import annotations

import json
import queue
import uuid
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .schema import ENSEMBLE, TENSORRT_LLM
from .serving.cancellation import stop_values


def _array(name: str, value) -> np.ndarray:
    spec = ENSEMBLE.input(name)
    if spec.dtype == "STRING":
        items = value if isinstance(value, (list, tuple)) else [value]
        array = np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in items], dtype=np.object_)
    else:
        array = np.array([value], dtype=spec.numpy_dtype)
    return array.reshape(1, -1)  # (batch=1, dims)


def build_request(text_input: str | bytes, **options) -> dict[str, np.ndarray]:
    """Wire values for one ensemble request; options use the ensemble's input names (None = not sent).
    `history` may be a list (JSON-encoded here) or a JSON string."""
    if isinstance(options.get("history"), (list, tuple)):
        options["history"] = json.dumps(options["history"], ensure_ascii=False)
    values = {"text_input": _array("text_input", text_input)}
    for name, value in options.items():
        if value is not None:
            values[name] = _array(name, value)
    return values


def to_infer_inputs(values: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in values.items():
        tensor = grpcclient.InferInput(name, list(array.shape), ENSEMBLE.input(name).wire_dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@dataclass(frozen=True)
class Chunk:
    text: str
    finish_reason: str  # "" until the last chunk
    num_input_tokens: int
    num_output_tokens: int


def to_chunk(result, errors: str = "strict") -> Chunk | None:
    """An ensemble response (sync or asyncio client) -> Chunk; None for the empty final response. errors: how
    text_output is decoded (chunks end on UTF-8 boundaries; "replace" only guards against a bug there)."""
    text = result.as_numpy("text_output")
    if text is None:  # the empty final response
        return None
    scalar = lambda name: result.as_numpy(name).reshape(-1)[0]  # noqa: E731
    return Chunk(text.reshape(-1)[0].decode("utf-8", errors), scalar("finish_reason").decode(),
                 int(scalar("num_input_tokens")), int(scalar("num_output_tokens")))


def is_final(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


class QwenClient:
    """One gRPC stream, opened at the first request and kept for the next ones (as perf_analyzer does: a
    stream per request costs about 1 to 2 ms of time to first token); one request at a time per client
    (use one client per concurrent conversation). close() it, or use it in a with block: the open stream
    has a non-daemon thread."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "ensemble", timeout_s: float | None = None):
        self.url = url
        self.model = model
        self.timeout_s = timeout_s  # longest wait for the next response; None waits forever
        self.grpc = grpcclient.InferenceServerClient(url)
        self._replies: queue.Queue | None = None  # the open stream's responses; None while no stream is open

    def _open_stream(self) -> queue.Queue:
        if self._replies is None:
            replies: queue.Queue = queue.Queue()
            self.grpc.start_stream(callback=lambda result, error: replies.put((result, error)))
            self._replies = replies
        return self._replies

    def _close_stream(self, cancel_requests: bool) -> None:
        if self._replies is not None:
            self._replies = None
            self.grpc.stop_stream(cancel_requests=cancel_requests)

    def stream(self, text_input: str | bytes, **options) -> Iterator[Chunk]:
        options.setdefault("stream", True)
        replies = self._open_stream()
        ended = False
        try:
            self.grpc.async_stream_infer(self.model, to_infer_inputs(build_request(text_input, **options)),
                                         request_id=uuid.uuid4().hex, enable_empty_final_response=True)
            while not ended:
                try:
                    result, error = replies.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise TimeoutError(f"no response from {self.model} within {self.timeout_s} s") from None
                if error is not None:
                    raise error
                ended = is_final(result)
                chunk = to_chunk(result)
                if chunk is not None:
                    yield chunk
        finally:
            if not ended:
                # A consumer that stops early, an error or a timeout: the server-side request is cancelled
                # with the stream, so no late response of it reaches the next request.
                self._close_stream(cancel_requests=True)

    def generate(self, text_input: str | bytes, **options) -> Chunk:
        chunks = list(self.stream(text_input, stream=False, **options))
        if len(chunks) != 1:
            raise InferenceServerException(f"expected one response without streaming, got {len(chunks)}")
        return chunks[0]

    def close(self) -> None:
        self._close_stream(cancel_requests=False)
        self.grpc.close()

    def __enter__(self) -> "QwenClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send_stop(url: str, request_key: int, timeout_s: float = 5.0) -> None:
    """Asks tensorrt_llm (stop=true) to end the request tagged request_key; returns once it acknowledged."""
    inputs = []
    for name, value in stop_values(request_key).items():
        spec = TENSORRT_LLM.input(name)
        tensor = grpcclient.InferInput(name, [1, 1], spec.wire_dtype)
        tensor.set_data_from_numpy(np.array([[value]], dtype=spec.numpy_dtype))
        inputs.append(tensor)
    replies: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url) as grpc:
        grpc.start_stream(callback=lambda result, error: replies.put((result, error)))
        try:
            grpc.async_stream_infer(TENSORRT_LLM.name, inputs, enable_empty_final_response=True)
            while True:
                result, error = replies.get(timeout=timeout_s)
                if error is not None:
                    raise error
                if is_final(result):
                    return
        finally:
            grpc.stop_stream()
