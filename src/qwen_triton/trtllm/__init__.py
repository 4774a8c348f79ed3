"""The TensorRT-LLM runtime and engine build, written against one release and the NGC image that ships it."""
TENSORRT_LLM_VERSION = "1.0.0"
# 25.10: TensorRT-LLM 1.0.0, Python 3.12; its Triton has the CVE-2025-23310 fix (Triton 25.07 and later).
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"
