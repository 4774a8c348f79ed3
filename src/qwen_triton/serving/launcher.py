"""Finds, starts, waits for and stops a real `tritonserver`; knows nothing about the models it serves.

Uses a `tritonserver` already on PATH (NGC container) or the one shipped in the nvidia-pytriton
wheel. For the wheel's server it respects what ../shared/gpu-bundle/README.md verified: the
Python backend stub is copied into a backend folder of our own, LD_LIBRARY_PATH carries the
wheel's libraries, this interpreter's bin/ leads PATH (the stub embeds the first `python3` on
PATH and ignores PYTHONPATH), and servers get a short exit timeout.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
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


def _pytriton_root() -> Path | None:
    # find_spec, not import: importing pytriton pulls its client stack (gevent).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _wheel_libs(root: Path) -> Path:
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
    root = _pytriton_root()
    if root is None:
        raise RuntimeError("no tritonserver on PATH and nvidia-pytriton is not installed (pip install -e .[serve])")
    return TritonInstall(root / "tritonserver" / "bin" / "tritonserver", _own_backend_dir(root), (_wheel_libs(root),))


def perf_analyzer_binary() -> str:
    """The client wheel's perf_analyzer beside this interpreter, else the one on PATH (NGC SDK image)."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    return str(beside) if beside.is_file() else "perf_analyzer"


def perf_analyzer_env() -> dict[str, str]:
    """Environment in which the client wheel's perf_analyzer finds libb64.so.0d and libcudart.so.12."""
    env = dict(os.environ)
    root = _pytriton_root()
    if root is None:
        return env
    link_dir = Path(sys.prefix) / "share" / "qwen-triton" / "perf-libs"
    link_dir.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        found = sorted(_wheel_libs(root).glob(pattern))
        if found and not (link_dir / name).exists():
            (link_dir / name).symlink_to(found[0])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(link_dir), str(_wheel_libs(root)), env.get("LD_LIBRARY_PATH")]))
    return env


class TritonServer:
    """One tritonserver process; use as a context manager or call start()/stop()."""

    def __init__(self, model_repository: str | Path, ports: Ports = Ports(), log_file: str | Path | None = None,
                 exit_timeout_s: int = 5, verbose: int = 0, python_bin: str | Path | None = None):
        self.model_repository = Path(model_repository)
        self.python_bin = Path(python_bin) if python_bin else None
        self.ports = ports
        self.log_file = Path(log_file) if log_file else None
        self.exit_timeout_s = exit_timeout_s
        self.verbose = verbose
        self.install = find_triton()
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [str(self.install.server), f"--model-repository={self.model_repository}",
               f"--grpc-port={self.ports.grpc}", f"--http-port={self.ports.http}",
               f"--metrics-port={self.ports.metrics}", f"--exit-timeout-secs={self.exit_timeout_s}",
               f"--log-verbose={self.verbose}"]
        if self.install.backend_dir is not None:
            cmd.append(f"--backend-directory={self.install.backend_dir}")
        return cmd

    def start(self, ready_timeout_s: float = 180.0) -> "TritonServer":
        out = open(self.log_file, "w") if self.log_file else None
        self.process = subprocess.Popen(self.command(), env=self.install.env(self.python_bin), stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready(ready_timeout_s)
        return self

    def is_ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.http}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(self.exit_timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start tritonserver on a model repository (foreground, Ctrl-C stops).")
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("GRPC_PORT", 8001)))
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("HTTP_PORT", 8000)))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("METRICS_PORT", 8002)))
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    server = TritonServer(args.model_repository, Ports(args.grpc_port, args.http_port, args.metrics_port),
                          exit_timeout_s=10, verbose=args.verbose)
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # Explicit handlers: a shell that backgrounds `make serve` starts it with SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    print("starting:", " ".join(server.command()), flush=True)
    server.start(ready_timeout_s=600)
    print(f"ready: gRPC 127.0.0.1:{args.grpc_port}  HTTP {args.http_port}  metrics {args.metrics_port}; Ctrl-C stops",
          flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return server.process.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
