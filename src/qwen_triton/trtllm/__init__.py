"""The TensorRT-LLM runtime and engine build, written against one release and the NGC image that ships it."""
TENSORRT_LLM_VERSION = "0.14.0"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3"  # Triton 2.51.0, TensorRT-LLM 0.14.0
