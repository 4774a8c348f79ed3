"""The engine contract is torch-free: the serving code, the model adapters and the TensorRT-LLM adapter load
without torch (only the torch runtime's factory imports it, when that runtime is chosen)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVING = ["engine_api", "serving.llm_service", "serving.responses", "serving.chat_request", "serving.llm_request", "serving.wire_values", "serving.preprocess",
           "serving.postprocess", "serving.runtime_choice", "serving.outbox", "serving.cancellation", "serving.triton_io",
           "serving.bls", "serving.nv_metrics", "serving.stats_reporter", "serving.watchdog", "serving.launcher",
           "serving.supervisor", "trtllm.executor_engine", "trtllm.executor_request", "trtllm.build", "schema", "config"]
ADAPTERS = ["preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"]

PROBE = """
import importlib, importlib.util, sys
sys.path.insert(0, {support!r})
import fake_pb_utils
sys.modules["triton_python_backend_utils"] = fake_pb_utils
for name in {modules!r}:
    importlib.import_module("qwen_triton." + name)
for model in {adapters!r}:
    path = {root!r} + "/model_repository/" + model + "/1/model.py"
    spec = importlib.util.spec_from_file_location(model + "_model", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(loaded[:3])
sys.exit(1 if loaded else 0)
"""


def _run(modules, adapters=()):
    code = PROBE.format(support=str(ROOT / "tests" / "support"), modules=list(modules), adapters=list(adapters),
                        root=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_serving_code_adapters_and_the_trtllm_adapter_never_import_torch():
    run = _run(SERVING, ADAPTERS)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_probe_sees_torch_when_the_torch_runtime_is_imported():
    run = _run(["runtime.factory"])
    assert run.returncode == 1 and "torch" in run.stdout, run.stdout + run.stderr
