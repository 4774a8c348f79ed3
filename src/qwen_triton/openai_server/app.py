"""The OpenAI-compatible HTTP app (FastAPI): /v1/chat/completions, /v1/completions, /v1/models, /health/ready,
/metrics, and the chat page (static/index.html at /, the folder at /static/). Every request runs on the one
event loop: its Triton call is a gRPC stream on the shared channel, and a client that disconnects cancels it."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..client import Chunk
from .errors import OpenAIError, from_triton, install_handlers, unavailable
from .mapping import chat_options, check_model, completion_options, field_names
from .metrics import CountResponses, FrontendMetrics
from .render import Renderer, collect, event_stream
from .schema import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, _Sampling
from .triton import TritonError, TritonGateway, TritonUnreachable

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Settings:
    triton_url: str
    triton_model: str = "ensemble"  # the Triton model answering (ensemble or tensorrt_llm_bls)
    served_model: str | None = None  # the id clients send as `model`; None: triton_model
    max_model_len: int | None = None  # None: read from the engine folder when it is on this host

    @property
    def model_id(self) -> str:
        return self.served_model or self.triton_model


class ClientGone(OpenAIError):
    def __init__(self):
        super().__init__(499, "the client closed the connection", type="client_closed_request")


class EventStream(StreamingResponse):
    """A server-sent-event body that stops as soon as the client disconnects, even while no event is due (with
    ASGI 2.4 servers Starlette would only notice at its next write), and then runs on_close once, however it
    ended (finished, failed, client gone, or never started): that closes the Triton call, cancelling it."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]], **kwargs):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            async with anyio.create_task_group() as group:
                async def respond():
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away during a write
                        pass
                    finally:
                        group.cancel_scope.cancel()

                group.start_soon(respond)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()
            await self.on_close()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work):
    """The awaitable's result, unless the client disconnects first: then it is cancelled and ClientGone raised."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, gone):
            pending.cancel()
    if task in done:
        return task.result()
    await asyncio.gather(task, return_exceptions=True)  # its cancellation has run (the gRPC call is cancelled)
    raise ClientGone()


async def translated(chunks: AsyncIterator[Chunk], params: dict[str, str], url: str) -> AsyncIterator[Chunk]:
    """The gateway's chunks with its errors in OpenAI's shape; closing this closes (and cancels) the call."""
    try:
        async for chunk in chunks:
            yield chunk
    except TritonError as exc:
        raise from_triton(str(exc), params) from None
    except TritonUnreachable as exc:
        raise unavailable(f"Triton at {url} is not reachable: {exc}") from None
    finally:
        await chunks.aclose()


async def first_chunk(chunks: AsyncIterator[Chunk]) -> Chunk:
    async for chunk in chunks:
        return chunk
    raise OpenAIError(500, "Triton ended the request without an answer", type="server_error")


def _on_done(metrics: FrontendMetrics, route: str, start: float) -> Callable[[Chunk], None]:
    def done(last: Chunk) -> None:
        metrics.duration.labels(route).observe(time.perf_counter() - start)
        metrics.prompt_tokens.labels(route).inc(last.num_input_tokens)
        metrics.completion_tokens.labels(route).inc(last.num_output_tokens)
    return done


async def generate(request: Request, body: _Sampling, options: dict, render: Renderer):
    """Runs one generation; the first chunk is awaited before answering, so that a refused request gets its HTTP
    error status (400 naming the field) rather than an error event in a 200 stream."""
    app, start, route = request.app, time.perf_counter(), request.url.path
    metrics: FrontendMetrics = app.state.metrics
    chunks = translated(app.state.gateway.generate(options), field_names(body), app.state.settings.triton_url)
    metrics.in_flight.inc()
    done, streaming = _on_done(metrics, route, start), False
    try:
        first = await unless_disconnected(request, first_chunk(chunks))
        if body.stream:
            metrics.ttft.labels(route).observe(time.perf_counter() - start)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            on_error = lambda error: metrics.errors.labels(route, error.detail.type).inc()  # noqa: E731
            events = event_stream(render, first, chunks, include_usage, on_error, done)

            async def close() -> None:
                await chunks.aclose()
                metrics.in_flight.dec()

            streaming = True
            return EventStream(events, close, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        text, last = await unless_disconnected(request, collect(first, chunks))
        answer = render.whole(text, last)
        done(last)
        return Response(answer.model_dump_json(), media_type="application/json")
    finally:
        if not streaming:  # EventStream's on_close does both once the stream ends
            metrics.in_flight.dec()
            await chunks.aclose()


async def model_card(app: FastAPI) -> ModelCard:
    settings: Settings = app.state.settings
    if not app.state.limits:  # read once the engine answers (the frontend may start before Triton is ready)
        app.state.limits = await app.state.gateway.engine_limits()
    limits = app.state.limits
    return ModelCard(id=settings.model_id, created=app.state.created,
                     max_model_len=settings.max_model_len or limits.get("max_seq_len"),
                     max_input_len=limits.get("max_input_len"))


def _routes(app: FastAPI) -> None:
    model_id = app.state.settings.model_id

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model, model_id)
        return await generate(request, body, chat_options(body), Renderer(model_id, chat=True))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model, model_id)
        options = completion_options(body)
        prefix = options["text_input"] if body.echo else ""
        return await generate(request, body, options, Renderer(model_id, chat=False, prefix=prefix))

    @app.get("/v1/models")
    async def models(request: Request):
        return ModelList(data=[await model_card(request.app)])

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        check_model(name, model_id)
        return await model_card(request.app)

    @app.get("/health/ready")
    async def ready(request: Request):
        if await request.app.state.gateway.ready():
            return JSONResponse({"status": "ready"})
        raise unavailable(f"Triton at {request.app.state.settings.triton_url} is not ready to serve "
                          f"{request.app.state.settings.triton_model}")

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(request.app.state.metrics.exposition(), media_type=request.app.state.metrics.content_type)

    @app.get("/")
    async def page():
        if not (STATIC_DIR / "index.html").is_file():
            raise OpenAIError(404, "the chat page is not installed (static/index.html)", code="not_found")
        return FileResponse(STATIC_DIR / "index.html")


def create_app(settings: Settings, gateway_factory: Callable[[str, str], object] = TritonGateway) -> FastAPI:
    """gateway_factory(url, model): a TritonGateway, or a fake with the same methods (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.gateway = gateway_factory(settings.triton_url, settings.triton_model)  # inside the loop
        try:
            yield
        finally:
            await app.state.gateway.close()

    # No /docs: Swagger UI loads its files from a CDN, which the deployments this serves cannot reach.
    app = FastAPI(title="Qwen on Triton: OpenAI-compatible API", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.settings, app.state.metrics = settings, FrontendMetrics()
    app.state.limits, app.state.created = {}, int(time.time())
    install_handlers(app, lambda request, error: app.state.metrics.errors.labels(
        app.state.metrics.route(request.url.path), error.detail.type).inc())
    _routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(CountResponses, metrics=app.state.metrics)
    return app
