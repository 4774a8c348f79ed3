"""Test fake of TensorRT-LLM 1.0.0 (see ../README.md)."""
__version__ = "1.0.0"
