"""The launcher's environment for the wheel's tritonserver (starting it is covered by tests/e2e)."""
import os
import sys
from pathlib import Path

from qwen_triton.serving.launcher import Ports, TritonServer, find_triton


def test_free_ports_are_distinct():
    ports = Ports.free()
    assert len({ports.grpc, ports.http, ports.metrics}) == 3


def test_wheel_server_gets_its_own_backend_dir_and_this_python_first(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_TRITON_USE_WHEEL", "1")
    install = find_triton()
    stub = install.backend_dir / "python" / "triton_python_backend_stub"
    assert install.server.is_file() and stub.is_file()
    assert (install.backend_dir / "python" / "libtriton_python.so").is_file()
    env = install.env()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert any(Path(d).name == "nvidia_pytriton.libs" for d in env["LD_LIBRARY_PATH"].split(os.pathsep))
    command = TritonServer(tmp_path, Ports(1, 2, 3)).command()
    assert "--grpc-port=1" in command and any(a.startswith("--backend-directory=") for a in command)
