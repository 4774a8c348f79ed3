"""pb_utils tensors <-> plain numpy values, checked against the wire schema; per-request error responses.

Imported only inside a Triton Python-backend process (or a test that installs the fake
`triton_python_backend_utils`). Knows the schema, not what the values mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ..errors import InvalidRequest, Unavailable
from ..schema import TENSORRT_LLM, ModelSpec
from .cancellation import stop_values


def read_inputs(request, spec: ModelSpec) -> dict[str, np.ndarray]:
    """The inputs present in one request, batch dimension removed."""
    values = {}
    for tensor_spec in spec.inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, tensor_spec.name)
        if tensor is None:
            continue
        array = tensor.as_numpy()
        if array.ndim == len(tensor_spec.dims) + 1:
            if array.shape[0] != 1:
                raise InvalidRequest(tensor_spec.name, f"batch of {array.shape[0]} in one request; send one per request")
            array = array[0]
        values[tensor_spec.name] = array
    return values


def make_response(spec: ModelSpec, outputs: dict[str, Any]):
    tensors = []
    for name, value in outputs.items():
        tensor_spec = spec.output(name)
        array = np.asarray(value, dtype=tensor_spec.numpy_dtype)
        tensors.append(pb_utils.Tensor(name, array[np.newaxis, ...] if tensor_spec.batched else array))
    return pb_utils.InferenceResponse(output_tensors=tensors)


def error_response(exc: BaseException):
    if isinstance(exc, InvalidRequest):
        error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
    elif isinstance(exc, Unavailable):
        error = pb_utils.TritonError(str(exc), pb_utils.TritonError.UNAVAILABLE)
    else:
        error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def send_stop(key: int) -> None:
    """BLS: asks tensorrt_llm to end the request tagged `key` (answered at once, with the final flag only)."""
    inputs = [pb_utils.Tensor(name, np.asarray([[value]], dtype=TENSORRT_LLM.input(name).numpy_dtype))
              for name, value in stop_values(key).items()]
    request = pb_utils.InferenceRequest(model_name=TENSORRT_LLM.name, inputs=inputs, requested_output_names=[])
    for response in request.exec(decoupled=True):
        if response.has_error():
            raise RuntimeError(f"stop of request_key {key}: {response.error().message()}")
