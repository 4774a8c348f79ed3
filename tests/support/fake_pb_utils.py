"""A faithful fake of Triton's `triton_python_backend_utils` (python_backend r24.xx / Triton 2.51) for
driving model.py files in-process: same names and signatures, and the same refusals (a response
sent after the final flag, non-numpy tensors)."""
from __future__ import annotations

import json
import threading
import weakref

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonError(Exception):
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array):
        if not isinstance(array, np.ndarray):
            raise TritonError(f"tensor {name!r} must be a numpy array, got {type(array).__name__}")
        if array.dtype == np.object_ and not all(isinstance(v, (bytes, str)) for v in array.reshape(-1)):
            raise TritonError(f"tensor {name!r}: object arrays must hold bytes")
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors=None, error: TritonError | None = None):
        self._tensors = list(output_tensors or [])
        self._error = error

    def output_tensors(self):
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error


class ResponseSender:
    """Records what a decoupled model sends; `done` is set by the final flag."""

    def __init__(self):
        self.responses: list[InferenceResponse] = []
        self.flags: list[int] = []
        self.done = threading.Event()
        self.cancelled = False

    def send(self, response=None, flags: int = 0):
        if self.done.is_set():
            raise TritonError("Unable to send response. Response sender has been closed.")
        if response is not None:
            self.responses.append(response)
        self.flags.append(flags)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


# BLS: the real stub sends an InferenceRequest built by a model to the server; here a test routes a model
# name to a callable(request) -> iterable of InferenceResponse (what that model would send).
BLS_MODELS: dict = {}


class InferenceRequest:
    _ids = iter(range(1, 1 << 62))

    def __init__(self, inputs: list[Tensor] = (), request_id: str = "", model_name: str = "",
                 requested_output_names: list[str] = (), parameters: dict | str | None = None, **_):
        self._inputs = list(inputs)
        # The stub hands parameters() over as a JSON string ("{}" when none were set).
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        self._request_id = request_id or str(next(self._ids))
        self._sender = ResponseSender()
        self.model_name = model_name
        self.requested_output_names = list(requested_output_names)

    def exec(self, decoupled: bool = False):
        if self.model_name not in BLS_MODELS:
            raise TritonError(f"Failed to open the requested model: {self.model_name!r}")
        responses = list(BLS_MODELS[self.model_name](self))
        return iter(responses) if decoupled else responses[0]

    def inputs(self):
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def parameters(self) -> str:
        return self._parameters

    def get_response_sender(self) -> ResponseSender:
        return self._sender

    def is_cancelled(self) -> bool:
        return self._sender.cancelled


def get_input_tensor_by_name(request: InferenceRequest, name: str):
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str):
    return next((t for t in response.output_tensors() if t.name() == name), None)


def _recorder(level: str):
    return classmethod(lambda cls, message: cls.records.append((level, message)))


class Logger:
    records: list[tuple[str, str]] = []
    log_info, log_warn, log_error, log_verbose = (_recorder(level) for level in ("info", "warn", "error", "verbose"))


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = range(3)

    def __init__(self, name: str, description: str, kind: int):
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[Metric] = []

    def Metric(self, labels=None, buckets=None):  # noqa: N802 (the real API's name)
        if (buckets is None) == (self.kind == self.HISTOGRAM):  # as the real stub: buckets iff a histogram
            raise TritonError("Failed to create metric. " + ("Missing required" if buckets is None else "Unexpected")
                              + " buckets.")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in (labels or {}).items()):
            # As the real stub: the labels go to the server as JSON, each value read back as a string.
            raise TritonError("Failed to create metric. Label values must be strings.")
        metric = Metric(labels or {}, weakref.ref(self), buckets)
        self.metrics.append(metric)
        return metric


class Metric:
    def __init__(self, labels: dict, family: "weakref.ref[MetricFamily]", buckets: list | None = None):
        self.labels = labels
        self._family = family
        self._value = 0.0
        self.buckets = buckets
        self.observed: list[float] = []

    def set(self, value: float) -> None:
        if self._family() is None:  # as the real backend: the family must outlive its metrics
            raise TritonError("Invalid metric operation as the corresponding 'MetricFamily' has been deleted.")
        self._value = float(value)

    def increment(self, value: float) -> None:
        self._value += value

    def observe(self, value: float) -> None:
        if self.buckets is None:
            raise TritonError("observe() on a metric that is not a histogram")
        self.observed.append(float(value))

    def value(self) -> float:
        return self._value
