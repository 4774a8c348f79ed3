"""Wire values (numpy arrays, batch dimension removed) read as Python values, each bad one refused by name; Triton's
request parameters checked against a model's inputs. Shared by every model's adapter, as triton_io is; knows the
wire names and types, nothing of what they mean.
"""
from __future__ import annotations

import json

import numpy as np

from ..errors import InvalidRequest
from ..schema import ALIASES, Neutral


def scalar(values: dict[str, np.ndarray], name: str):
    array = values.get(name)
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise InvalidRequest(name, f"expected one value, got {flat.size}")
    return flat[0]


def as_text(name: str, raw) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(name, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def get_text(values, name: str, default: str | None = None) -> str | None:
    raw = scalar(values, name)
    return default if raw is None else as_text(name, raw)


def get_texts(values, name: str) -> tuple[str, ...]:
    array = values.get(name)
    if array is None:
        return ()
    return tuple(text for text in (as_text(name, raw) for raw in np.asarray(array).reshape(-1)) if text)


def get_int(values, name: str, default: int | None = None) -> int | None:
    raw = scalar(values, name)
    return default if raw is None else int(raw)


def get_float(values, name: str, default: float | None = None) -> float | None:
    raw = scalar(values, name)
    return default if raw is None else float(raw)


def get_bool(values, name: str, default: bool) -> bool:
    raw = scalar(values, name)
    return default if raw is None else bool(raw)


def get_ids(values, name: str) -> tuple[int, ...]:
    array = values.get(name)
    return () if array is None else tuple(int(i) for i in np.asarray(array).reshape(-1))


# Request parameters Triton or NVIDIA's clients may set that mean nothing to generation (tensorrtllm_backend's
# inflight_batcher_llm_client sends "Streaming"); any other parameter is a key this model does not know.
KNOWN_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end", "priority", "timeout",
                              "binary_data_output", "Streaming", "streaming"})


def check_parameters(parameters: str | dict | None, inputs: tuple[str, ...]) -> None:
    """Triton's HTTP generate turns every JSON key that is not an input into a request parameter, which the
    ensemble hands to preprocessing; refused here, so a misspelt or unsupported key is an error, not ignored."""
    if not parameters:
        return
    names = sorted(set(json.loads(parameters) if isinstance(parameters, str) else parameters) - KNOWN_PARAMETERS)
    if names:
        raise InvalidRequest(names[0], f"is not an input of this model (unknown keys: {', '.join(names)}); "
                                       f"the inputs are: {', '.join(inputs)}")


def check_neutral(values, neutrals: tuple[Neutral, ...]) -> None:
    """NVIDIA inputs for features this server lacks: fine at their neutral value, refused by name otherwise."""
    for neutral in neutrals:
        array = values.get(neutral.spec.name)
        if array is None or np.asarray(array).size == 0:
            continue
        if neutral.off is None:
            flat = np.asarray(array).reshape(-1)
            if neutral.spec.dtype == "STRING" and not any(len(v) for v in flat):
                continue  # an empty string: not asked for
            raise InvalidRequest(neutral.spec.name, neutral.why)
        value = scalar(values, neutral.spec.name)
        if value != neutral.off:
            raise InvalidRequest(neutral.spec.name, f"must be {neutral.off!r} ({neutral.why}), got {value!r}")


def get_aliased(values, name: str, get=None):
    """A knob under its name or its older one (ALIASES); both given and different: refused."""
    get = get or get_int
    old = next(old for old, new in ALIASES.items() if new == name)
    value, old_value = get(values, name), get(values, old)
    if value is not None and old_value is not None and value != old_value:
        raise InvalidRequest(old, f"is the older name of {name}; both were given, with different values "
                                  f"({old_value} and {value})")
    return value if value is not None else old_value


def get_floats(values, name: str) -> tuple[float, ...]:
    array = values.get(name)
    return () if array is None else tuple(float(v) for v in np.asarray(array).reshape(-1))
