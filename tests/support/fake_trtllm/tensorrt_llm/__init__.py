"""Test fake of TensorRT-LLM 0.14.0 (see ../README.md)."""
__version__ = "0.14.0"
