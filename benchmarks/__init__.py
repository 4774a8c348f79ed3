"""Benchmarks, load generation and profilers of the served ensemble and the engine: tooling, not the server.
Run from the repository root (`python -m benchmarks.<module>`); not installed with the server (pyproject finds
packages under src/ only). The server package (qwen_triton) never imports from here."""
