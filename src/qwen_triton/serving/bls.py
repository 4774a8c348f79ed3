"""tensorrt_llm_bls (docs/bls.md): NVIDIA tensorrtllm_backend's one-model pipeline, for its clients. Each request
runs on a thread of its own: preprocessing in-process (Preprocessor), tensorrt_llm through BLS, each of its
responses decoded in-process (Postprocessor.chunk) and sent with the ensemble's output names and shapes.

Cancellation: Triton 2.51 never cancels a BLS child request, so tensorrt_llm is asked for request_key and probes
(cancel_probe_ms, as in the ensemble) and a cancelled request is stopped by its key (CancelRelay, as
postprocessing does); the client's stream then ends at once.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from ..errors import Unavailable
from ..schema import ENSEMBLE_TO_TENSORRT_LLM, PREPROCESSING, TENSORRT_LLM, TENSORRT_LLM_BLS, TRTLLM_SAMPLING_NAMES
from .cancellation import CancelRelay
from .postprocess import Postprocessor
from .preprocess import Preprocessor
from .chat_request import ChatRequest
from .wire_values import check_parameters, get_int
from .triton_io import error_response, make_response, read_inputs, send_stop

logger = logging.getLogger(__name__)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# As the ensemble wires tensorrt_llm: client inputs passed straight through (client name -> tensorrt_llm name),
# and every preprocessing output under its own name, but for the knobs preprocessing resolves (seed).
DIRECT = ENSEMBLE_TO_TENSORRT_LLM
PREPROCESSED = {t.name: TRTLLM_SAMPLING_NAMES.get(t.name, t.name) for t in PREPROCESSING.outputs}
LLM_OUTPUTS = [t.name for t in TENSORRT_LLM.outputs]
INPUT_NAMES = tuple(t.name for t in TENSORRT_LLM_BLS.inputs)
REQUESTS_PER_SLOT = 4  # requests served at once: the engine's max_batch_size times this; beyond, UNAVAILABLE


def llm_tensors(values: dict[str, np.ndarray], preprocessed: dict[str, np.ndarray]) -> list:
    """tensorrt_llm's inputs, batch dimension added. preprocessed carries cancel_probe_ms: every response then
    carries request_key, and a silent request is probed (docs/cancellation.md)."""
    named = {PREPROCESSED[name]: value for name, value in preprocessed.items()}
    named.update((DIRECT[name], value) for name, value in values.items() if name in DIRECT)
    return [pb_utils.Tensor(name, np.asarray(value, dtype=TENSORRT_LLM.input(name).numpy_dtype)[np.newaxis, ...])
            for name, value in named.items()]


def llm_values(response) -> dict[str, np.ndarray]:
    """One tensorrt_llm response as postprocessing reads it: batch dimension removed, output_ids as tokens_batch."""
    return {"tokens_batch" if t.name() == "output_ids" else t.name(): t.as_numpy()[0]
            for t in response.output_tensors()}


def forwarded_error(error):
    """tensorrt_llm's error as the client's: the same text and code."""
    code = error.code() if hasattr(error, "code") else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(error.message(), code))


class ClientStream:
    """The BLS request's response sender; sends nothing after the final flag."""

    def __init__(self, sender):
        self.sender = sender
        self.done = False

    def send(self, response=None, final: bool = False) -> None:
        if not self.done:
            self.done = final
            self.sender.send(response, flags=FINAL if final else 0)


class BlsPipeline:
    def __init__(self, preprocess: Preprocessor, postprocess: Postprocessor, max_active: int, stop=send_stop):
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.max_active = max_active
        self.stop = stop  # request_key -> None: ends that request in tensorrt_llm
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    @classmethod
    def from_engine_dir(cls, engine_dir: str) -> "BlsPipeline":
        preprocess = Preprocessor.from_engine_dir(engine_dir)
        slots = preprocess.folder.config.limits.max_batch_size
        return cls(preprocess, Postprocessor(preprocess.tokenizer), slots * REQUESTS_PER_SLOT)

    def submit(self, request) -> None:
        """Reads the request's inputs here, in execute(), and serves it on a thread of its own; returns at once.
        Refused (UNAVAILABLE) beyond max_active requests at a time."""
        client = ClientStream(request.get_response_sender())
        try:
            check_parameters(request.parameters(), INPUT_NAMES)  # HTTP generate's unknown keys, as preprocessing
            self._start(read_inputs(request, TENSORRT_LLM_BLS), client, request.is_cancelled)
        except Exception as exc:  # a bad input names its field (InvalidRequest)
            client.send(error_response(exc), final=True)

    def _start(self, values: dict[str, np.ndarray], client: ClientStream, is_cancelled) -> None:
        thread = threading.Thread(target=self._run, args=(values, client, is_cancelled), name="tensorrt_llm_bls",
                                  daemon=True)
        with self._lock:
            if len(self._threads) >= self.max_active:
                raise Unavailable(f"tensorrt_llm_bls serves at most {self.max_active} requests at a time; retry")
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
            raise

    def _run(self, values, client: ClientStream, is_cancelled) -> None:
        try:
            self.serve(values, client, is_cancelled)
        except Exception as exc:  # this request alone fails
            try:
                client.send(error_response(exc), final=True)
            except Exception:
                logger.exception("tensorrt_llm_bls: could not answer a failed request")
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def serve(self, values: dict[str, np.ndarray], client: ClientStream, is_cancelled) -> None:
        """One request: preprocessing, tensorrt_llm through BLS, each response decoded and sent on."""
        preprocessed = self.preprocess(ChatRequest.from_inputs(values))
        llm = pb_utils.InferenceRequest(model_name=TENSORRT_LLM.name, inputs=llm_tensors(values, preprocessed),
                                        requested_output_names=LLM_OUTPUTS)
        relay = CancelRelay(self.stop)
        for response in llm.exec(decoupled=True):  # blocks for each response; the last one ends it
            if not client.done:  # once done (stopped, failed), the rest is drained unsent
                self.forward(response, client, relay, is_cancelled)
        client.send(final=True)

    def forward(self, response, client: ClientStream, relay: CancelRelay, is_cancelled) -> None:
        if response.has_error():
            client.send(forwarded_error(response.error()), final=True)
            return
        values = llm_values(response)
        outputs = self.postprocess.chunk(values)  # None for a probe (request_key alone) or a bare final flag
        # Whether the client cancelled is asked at most every 100 ms per request, and at every probe.
        if relay(get_int(values, "request_key"), is_cancelled, probe=outputs is None):
            client.send(final=True)  # stopped: tensorrt_llm ends it at its next step
        elif outputs is not None:
            client.send(make_response(TENSORRT_LLM_BLS, outputs))

    def close(self, timeout_s: float = 5.0) -> None:
        """Waits (up to timeout_s in all) for the requests still served."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
