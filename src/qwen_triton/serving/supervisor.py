"""`python -m qwen_triton.serving.launcher` (what `make serve` runs): tritonserver in the foreground, watched.

Once Triton is ready, the OpenAI-compatible server (qwen_triton.openai_server) starts beside it as a child on
--openai-port (0: not started), talking to Triton's gRPC port.

Ctrl-C or SIGTERM drains the server (every running request is answered, cancelled) and then stops it; the OpenAI
server stops taking connections first and exits once its streams have their last event. A model stub that dies,
or a tritonserver that exits by itself, is restarted: the server is stopped, its stubs killed and a new one
started, and the OpenAI server with it; until it is ready again its health endpoints refuse connections, so an
orchestrator's readiness probe sees it, and requests in flight end with an error at once. An OpenAI server that
exits by itself is restarted alone.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from ..openai_server.process import OpenAIServerProcess
from .launcher import ADMIN_KEY_ENV, ADMIN_HEADER, RESTRICTED_APIS, Ports, TritonServer

WATCH_S = 0.5  # how often the server and its stubs are checked


def _args(argv):
    parser = argparse.ArgumentParser(description="Start tritonserver on a model repository and the OpenAI-compatible server "
                                     "beside it (foreground, Ctrl-C stops both).")
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--bind", default=os.environ.get("BIND_ADDRESS", "127.0.0.1"),
                        help="address of every listener (default loopback; 0.0.0.0 exposes the server)")
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("GRPC_PORT", 8001)))
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("HTTP_PORT", 8000)))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("METRICS_PORT", 8002)))
    parser.add_argument("--openai-port", type=int, default=int(os.environ.get("OPENAI_PORT", 9000)),
                        help="the OpenAI-compatible server's port (0: do not start it)")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--max-restarts", type=int, default=10, help="restarts after a crash before giving up")
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _openai(args, server: TritonServer) -> OpenAIServerProcess | None:
    if not args.openai_port:
        return None
    return OpenAIServerProcess(f"{server.local_host}:{args.grpc_port}", host=args.bind, port=args.openai_port)


def _start_openai(openai: OpenAIServerProcess | None) -> None:
    if openai is not None:
        openai.start()
        print(f"ready: OpenAI API {openai.base_url}/v1 (chat page {openai.base_url}/)", flush=True)


def _crash(server: TritonServer) -> str | None:
    """Why the running server must be restarted, or None."""
    if server.process.poll() is not None:
        return f"tritonserver exited with {server.process.returncode}"
    dead = server.dead_stubs()
    return f"model stub process {dead} died" if dead else None


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    server = TritonServer(args.model_repository, Ports(args.grpc_port, args.http_port, args.metrics_port),
                          exit_timeout_s=10, verbose=args.verbose, bind=args.bind,
                          admin_key=os.environ.get(ADMIN_KEY_ENV))
    openai = _openai(args, server)
    # Explicit handlers: a shell that backgrounds `make serve` starts it with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    print("starting:", " ".join(server.command()).replace(server.admin_key, "***"), flush=True)
    restarts = 0
    try:
        server.start(ready_timeout_s=600)
        print(f"ready: gRPC {args.bind}:{args.grpc_port}  HTTP {args.bind}:{args.http_port}  metrics "
              f"{args.bind}:{args.metrics_port}; {', '.join(RESTRICTED_APIS)} APIs need the {ADMIN_HEADER} header "
              f"(${ADMIN_KEY_ENV}); Ctrl-C stops", flush=True)
        _start_openai(openai)
        while True:
            time.sleep(WATCH_S)
            reason = _crash(server)
            frontend_exit = openai.exited() if openai else None
            if reason is None and frontend_exit is None:
                continue
            if restarts >= args.max_restarts:
                print(f"{reason or f'the OpenAI server exited with {frontend_exit}'}; {restarts} restarts already, "
                      "giving up", file=sys.stderr, flush=True)
                return 1
            restarts += 1
            _restart(server, openai, reason, restarts, args.max_restarts)
    except KeyboardInterrupt:
        pass
    finally:
        if openai is not None:
            openai.begin_stop()  # no new connections; its streams end as Triton drains below
        server.stop()
        if openai is not None:
            openai.stop()
    return 0


def _restart(server: TritonServer, openai: OpenAIServerProcess | None, reason: str | None, restarts: int,
             most: int) -> None:
    """reason: why Triton must restart (the OpenAI server restarts with it); None: only the OpenAI server died."""
    if reason is None:
        print(f"the OpenAI server exited with {openai.exited()}; restarting it ({restarts} of at most {most})",
              file=sys.stderr, flush=True)
        _start_openai(openai)
        return
    print(f"{reason}; restarting tritonserver{' and the OpenAI server' if openai else ''} ({restarts} of at most "
          f"{most})", file=sys.stderr, flush=True)
    server.stop(graceful=False)  # first: the OpenAI server's requests in flight fail now, so it stops at once
    if openai is not None:
        openai.stop()
    server.start(ready_timeout_s=600)
    print("ready again", flush=True)
    _start_openai(openai)
