"""The frontend's own Prometheus metrics (GET /metrics of this server; Triton's are on its metrics port): requests
by route and HTTP status, errors by OpenAI error type, time to first token, request duration, tokens. One
registry per app, so that two apps in one process (tests) count apart."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; from 5 ms (a short prompt on an idle GPU) to a minute (a long queue on a CPU).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The routes counted by name; any other path is counted as "other" (a scanner's paths must not grow the labels).
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health/ready", "/metrics", "/")


class FrontendMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qwen_openai_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=r)
        self.errors = Counter("qwen_openai_errors", "Errors answered in OpenAI's shape (mid-stream ones included), "
                              "by route and error type", ["route", "type"], registry=r)
        self.in_flight = Gauge("qwen_openai_requests_in_flight", "Generation requests being answered", registry=r)
        self.ttft = Histogram("qwen_openai_time_to_first_token_seconds", "From a streamed request's arrival to "
                              "its first generated text", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.duration = Histogram("qwen_openai_request_duration_seconds", "From a generation request's arrival "
                                  "to its last token", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("qwen_openai_prompt_tokens", "Prompt tokens of finished requests "
                                     "(after the chat template)", ["route"], registry=r)
        self.completion_tokens = Counter("qwen_openai_completion_tokens", "Generated tokens of finished requests",
                                         ["route"], registry=r)

    @staticmethod
    def route(path: str) -> str:
        return path if path in ROUTES else "other"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountResponses:
    """ASGI middleware counting each HTTP response by route and status. Pure ASGI (not BaseHTTPMiddleware),
    so a streamed body is passed through untouched and a client's disconnect still reaches the route."""

    def __init__(self, app, metrics: FrontendMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.metrics.route(scope["path"])

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
