"""Errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}): the exception the routes raise,
the translation of pydantic's validation errors and of Triton's error messages, and the app's handlers."""
from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..schema import ENSEMBLE
from .schema import ErrorBody, ErrorDetail

logger = logging.getLogger(__name__)
# Triton prefixes a model's INVALID_ARG with the ensemble's name; our models put the input's name first
# (qwen_triton.errors.InvalidRequest: "field: message").
_FIELD_ERROR = re.compile(r"^(?:in ensemble '[^']*', )?([a-z_]+): (.+)$", re.S)
# Phrases of Triton (model not loaded, server stopping) and of our models (serving draining) for "try later".
_UNAVAILABLE = ("shutting down", "is not ready", "unknown model", "unavailable", "server is stopping",
                "model unloading", "serves at most")
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|(list|dict)\[.*\]|[A-Z]\w*)$")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.detail)


def bad_request(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {message}", param=param)


def unavailable(message: str) -> OpenAIError:
    return OpenAIError(503, message, type="server_error", code="service_unavailable")


def _param(loc: tuple) -> str | None:
    """("body", "messages", 2, "content") -> "messages[2].content"."""
    text = ""
    for part in loc:
        if part != "body":
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _split_union(loc: tuple) -> tuple[tuple, str | None]:
    """pydantic names each member of a union it tried ("stop", "list[str]", 0): the field's own location, and
    the member's name (None when the field is not a union)."""
    for i, part in enumerate(loc):
        if isinstance(part, str) and _UNION_MEMBER.match(part):
            return loc[:i], part
    return loc, None


def from_validation(exc: RequestValidationError) -> OpenAIError:
    errors = exc.errors()
    first = errors[0]
    if first.get("type") in ("json_invalid", "model_attributes_type"):
        return OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    loc, member = _split_union(tuple(first.get("loc", ())))
    param = _param(loc)
    if first.get("type") == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if first.get("type") == "missing":
        return OpenAIError(400, f"{param}: is required", param=param)
    if member is not None:  # every member failed: name what the field may be
        members = []
        for error in errors:
            where, name = _split_union(tuple(error["loc"]))
            if where == loc and name and name not in members:
                members.append(name)
        return OpenAIError(400, f"{param}: expected {' or '.join(members)}", param=param)
    return OpenAIError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param)


def from_triton(message: str, params: dict[str, str]) -> OpenAIError:
    """An error the ensemble answered with. INVALID_ARG naming one of its inputs -> 400 naming the OpenAI field
    that fed it (params: ensemble input -> OpenAI field); "try later" -> 503; anything else -> 500."""
    match = _FIELD_ERROR.match(message.strip())
    if match and match[1] in params:
        return bad_request(params[match[1]], match[2])
    if match and _is_input(match[1]):
        return OpenAIError(400, match[0], param=None)
    if any(phrase in message.lower() for phrase in _UNAVAILABLE):
        return unavailable(f"Triton cannot serve this request now: {message}")
    return OpenAIError(500, f"Triton: {message}", type="server_error")


def _is_input(name: str) -> bool:
    try:
        ENSEMBLE.input(name)
        return True
    except KeyError:
        return False


def _json(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body().model_dump(), status_code=error.status)


def install_handlers(app: FastAPI, count_error) -> None:
    """count_error(request, error): the metrics hook, called once per error answered."""

    async def on_openai_error(request: Request, exc: OpenAIError):
        count_error(request, exc)
        return _json(exc)

    async def on_validation(request: Request, exc: RequestValidationError):
        return await on_openai_error(request, from_validation(exc))

    async def on_http(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = OpenAIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
        return await on_openai_error(request, error)

    async def on_unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error answering %s", request.url.path)
        return await on_openai_error(request, OpenAIError(500, f"{type(exc).__name__}: {exc}", type="server_error"))

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
