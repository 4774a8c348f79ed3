"""Finds, starts, waits for and stops a real `tritonserver`. Of the models it knows one thing: a stop request
with the drain key (serving.cancellation) ends what tensorrt_llm runs, so a shutdown answers every request.

Uses a `tritonserver` already on PATH (NGC container) or the one shipped in the nvidia-pytriton
wheel. For the wheel's server it respects what ../shared/gpu-bundle/README.md verified: the
Python backend stub is copied into a backend folder of our own, LD_LIBRARY_PATH carries the
wheel's libraries, this interpreter's bin/ leads PATH (the stub embeds the first `python3` on
PATH and ignores PYTHONPATH), and servers get a short exit timeout.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..client import send_stop
from .cancellation import DRAIN_KEY_ENV
from .processes import children, die_with_parent, is_alive, kill_all

logger = logging.getLogger(__name__)
# Triton API groups that change the server or read its memory: callable only with this header
# (admin-key: $QWEN_TRITON_ADMIN_KEY), on HTTP and gRPC alike.
RESTRICTED_APIS = ("model-repository", "logging", "trace", "shared-memory")
ADMIN_KEY_ENV = "QWEN_TRITON_ADMIN_KEY"
ADMIN_HEADER = "admin-key"


@dataclass(frozen=True)
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        return cls(*free_ports(3))


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free now (bound all at once, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    backend_dir: Path | None  # None: the server's default (/opt/tritonserver/backends)
    lib_dirs: tuple[Path, ...] = ()

    def env(self, python_bin: Path | None = None) -> dict[str, str]:
        """python_bin: the bin/ of the environment the Python models run in (default: this interpreter's)."""
        env = dict(os.environ)
        bin_dir = str(python_bin or Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        libs = [str(d) for d in self.lib_dirs]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        return env


def pytriton_root() -> Path | None:
    # find_spec, not import: importing pytriton pulls its client stack (gevent).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def wheel_libs(root: Path) -> Path:
    return root.parent / "nvidia_pytriton.libs"


def _own_backend_dir(root: Path) -> Path:
    """<venv>/share/qwen-triton/backends/python: the wheel's backend plus the stub for this Python."""
    tritonserver = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    backends = Path(sys.prefix) / "share" / "qwen-triton" / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for src in (tritonserver / "backends" / "python").glob("*"):
        if src.is_file() and not (python_dir / src.name).exists():
            shutil.copy2(src, python_dir / src.name)
    if not (python_dir / stub.name).exists():
        shutil.copy2(stub, python_dir / stub.name)
    return backends


def find_triton() -> TritonInstall:
    on_path = shutil.which("tritonserver")
    if on_path and not os.environ.get("QWEN_TRITON_USE_WHEEL"):
        return TritonInstall(Path(on_path), None)
    root = pytriton_root()
    if root is None:
        raise RuntimeError("no tritonserver on PATH and nvidia-pytriton is not installed (pip install -e .[serve])")
    return TritonInstall(root / "tritonserver" / "bin" / "tritonserver", _own_backend_dir(root), (wheel_libs(root),))


def http_ready(host: str, http_port: int, timeout_s: float = 2.0) -> bool:
    """Triton's readiness endpoint answers 200 (a refused connection is not ready)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=timeout_s) as reply:
            return reply.status == 200
    except OSError:
        return False


class TritonServer:
    """One tritonserver process; use as a context manager or call start()/stop().

    bind: the address every listener binds (loopback unless the deployment says otherwise). admin_key: the
    value of the admin-key header that unlocks RESTRICTED_APIS (None: a random key nobody knows)."""

    def __init__(self, model_repository: str | Path, ports: Ports = Ports(), log_file: str | Path | None = None,
                 exit_timeout_s: int = 5, verbose: int = 0, python_bin: str | Path | None = None,
                 bind: str = "127.0.0.1", admin_key: str | None = None):
        self.model_repository = Path(model_repository)
        self.python_bin = Path(python_bin) if python_bin else None
        self.ports = ports
        self.log_file = Path(log_file) if log_file else None
        self.exit_timeout_s = exit_timeout_s
        self.verbose = verbose
        self.bind = bind
        self.admin_key = admin_key or secrets.token_hex(16)
        self.drain_key = secrets.randbits(63) | 1
        self.install = find_triton()
        self.process: subprocess.Popen | None = None
        self.stubs: list[int] = []  # the models' stub processes, found once the server is ready

    def command(self) -> list[str]:
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}"
        cmd = [str(self.install.server), f"--model-repository={self.model_repository}",
               f"--grpc-address={self.bind}", f"--http-address={self.bind}", f"--metrics-address={self.bind}",
               f"--grpc-port={self.ports.grpc}", f"--http-port={self.ports.http}",
               f"--metrics-port={self.ports.metrics}", f"--exit-timeout-secs={self.exit_timeout_s}",
               f"--log-verbose={self.verbose}", f"--http-restricted-api={restricted}",
               f"--grpc-restricted-protocol={restricted}"]
        if self.install.backend_dir is not None:
            cmd.append(f"--backend-directory={self.install.backend_dir}")
        return cmd

    @property
    def local_host(self) -> str:
        """Where this machine reaches the listeners."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind

    def start(self, ready_timeout_s: float = 180.0) -> "TritonServer":
        out = open(self.log_file, "a") if self.log_file else None
        env = {**self.install.env(self.python_bin), DRAIN_KEY_ENV: str(self.drain_key)}
        # A session of its own: a terminal's Ctrl-C reaches the launcher only, which drains first.
        self.process = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=die_with_parent)
        self.wait_ready(ready_timeout_s)
        self.stubs = children(self.process.pid)
        return self

    def is_ready(self) -> bool:
        return http_ready(self.local_host, self.ports.http)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; {self._log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s; {self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_file or not self.log_file.exists():
            return "see the server output above"
        return "log tail:\n" + "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def dead_stubs(self) -> list[int]:
        """Stub processes of the running server that have died (the server never notices by itself)."""
        return [pid for pid in self.stubs if not is_alive(pid)]

    def drain(self, timeout_s: float = 5.0) -> bool:
        """Ends every request tensorrt_llm runs (each answered cancelled) and refuses new ones; returns once
        tensorrt_llm has sent every final response, so every ensemble step those need is already scheduled.
        False if the server could not be drained (no tensorrt_llm, a dead stub, a request that would not end)."""
        try:
            send_stop(f"{self.local_host}:{self.ports.grpc}", self.drain_key, timeout_s=timeout_s)
            return True
        except Exception as exc:  # a server that cannot drain is stopped all the same
            logger.warning("could not drain tritonserver: %s", exc)
        return False

    def stop(self, graceful: bool = True) -> None:
        """graceful: drain (when the stubs live), SIGINT, SIGKILL after the exit timeout. Otherwise (a broken
        server) SIGKILL at once, so clients see their connections close now. No stub outlives it."""
        if self.process is not None and self.process.poll() is None:
            if graceful and not self.dead_stubs():
                try:
                    self.drain()
                except Exception:  # whatever happens, the server is stopped below
                    logger.exception("draining tritonserver failed")
            self.process.send_signal(signal.SIGINT if graceful else signal.SIGKILL)
            try:
                self.process.wait(self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        kill_all(pid for pid in self.stubs if is_alive(pid))

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    from .supervisor import main as supervise

    return supervise(argv)


if __name__ == "__main__":
    sys.exit(main())
