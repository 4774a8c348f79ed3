"""An OpenAI-compatible HTTP server (FastAPI on uvicorn) in front of the Triton ensemble, over gRPC streaming;
`python -m qwen_triton.openai_server --triton-url HOST:PORT`. Named so as not to shadow the `openai` SDK.
Needs the `openai` extra (fastapi, uvicorn, prometheus-client); nothing the Triton models run imports it."""
