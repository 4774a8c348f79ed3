"""The OpenAI server as a child process (what `make serve`'s supervisor and the tests start): start, wait until it
answers, stop. It knows the command line and the readiness probe, not the app."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..serving.processes import die_with_parent


def _answers(url: str, timeout_s: float = 1.0) -> bool:
    """Any HTTP answer counts: the server is up, whether or not Triton is ready behind it."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class OpenAIServerProcess:
    def __init__(self, triton_url: str, host: str = "127.0.0.1", port: int = 9000, model: str = "ensemble",
                 log_file: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        self.triton_url, self.host, self.port, self.model = triton_url, host, port, model
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        local = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{local}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "qwen_triton.openai_server", "--triton-url", self.triton_url,
                "--host", self.host, "--port", str(self.port), "--model", self.model, *self.extra_args]

    def start(self, ready_timeout_s: float = 60.0) -> "OpenAIServerProcess":
        out = open(self.log_file, "a") if self.log_file else None
        # A session of its own, as tritonserver's: a terminal's Ctrl-C reaches the supervisor, which stops this
        # after Triton has drained (the streams in flight get their last event first).
        try:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=die_with_parent)
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        deadline = time.monotonic() + ready_timeout_s
        while not _answers(f"{self.base_url}/health/ready"):
            if self.process.poll() is not None:
                raise RuntimeError(f"the OpenAI server exited with {self.process.returncode} (port {self.port} "
                                   f"taken?); {self._where_logged()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the OpenAI server did not answer within {ready_timeout_s:.0f} s; "
                                   f"{self._where_logged()}")
            time.sleep(0.1)
        return self

    def _where_logged(self) -> str:
        return f"see {self.log_file}" if self.log_file else "see its output above"

    def exited(self) -> int | None:
        """Its exit code once it has exited by itself, else None."""
        return None if self.process is None else self.process.poll()

    def begin_stop(self) -> None:
        """SIGTERM: uvicorn stops accepting connections and waits for the responses in flight."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 35.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after timeout_s (longer than its graceful-shutdown limit)."""
        if self.process is None:
            return
        self.begin_stop()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "OpenAIServerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
