"""The asyncio side of Triton: one gRPC channel (tritonclient.grpc.aio) shared by every request of the event
loop, one bidirectional ModelStreamInfer call per request (a decoupled ensemble answers only over streams),
cancelled when its consumer stops early. It knows the ensemble's wire format, not OpenAI's."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import AsyncIterator

import grpc
import tritonclient.grpc.aio as grpc_aio

from ..client import Chunk, build_request, is_final, to_chunk, to_infer_inputs
from ..schema import TENSORRT_LLM

PROBE_TIMEOUT_S = 2.0  # readiness and metadata calls: a server that does not answer by then is not ready


class TritonError(Exception):
    """The ensemble refused or failed a request; the message is Triton's."""


class TritonUnreachable(Exception):
    """No answer from tritonserver at all (not running, restarting, wrong address)."""


class TritonGateway:
    """Create it inside the event loop that uses it (grpc.aio channels belong to one loop); close() it."""

    def __init__(self, url: str, model: str = "ensemble"):
        self.url = url
        self.model = model
        self.grpc = grpc_aio.InferenceServerClient(url)

    async def close(self) -> None:
        await self.grpc.close()

    async def ready(self) -> bool:
        try:
            return (await self.grpc.is_server_ready(client_timeout=PROBE_TIMEOUT_S)
                    and await self.grpc.is_model_ready(self.model, client_timeout=PROBE_TIMEOUT_S))
        except Exception:  # unreachable, or an error answer: not ready either way
            return False

    async def generate(self, options: dict) -> AsyncIterator[Chunk]:
        """Chunks of one request (options: build_request's keywords, text_input included). Raises TritonError for
        an error answer, TritonUnreachable when the call itself fails. Closing the iterator before the final
        response (a client gone, a task cancelled) cancels the gRPC call, which cancels the Triton request."""
        options = dict(options)
        inputs = to_infer_inputs(build_request(options.pop("text_input"), **options))

        async def requests():
            yield {"model_name": self.model, "inputs": inputs, "request_id": uuid.uuid4().hex,
                   "enable_empty_final_response": True}

        call = self.grpc.stream_infer(requests())
        finished = False
        try:
            async for result, error in call:
                if error is not None:
                    finished = True  # Triton ends a request when it answers it with an error
                    raise TritonError(str(error).strip())
                finished = is_final(result)
                chunk = to_chunk(result, errors="replace")
                if chunk is not None:
                    yield chunk
                if finished:
                    return
            raise TritonUnreachable("the gRPC stream ended before the final response")
        except grpc.RpcError as exc:
            finished = True
            raise TritonUnreachable(f"{exc.code().name}: {exc.details()}") from None
        finally:
            if not finished:
                call.cancel()

    async def engine_limits(self) -> dict[str, int]:
        """max_seq_len and max_input_len of the engine tensorrt_llm serves, read from its engine folder when that
        folder is on this host ({} otherwise: the frontend may run elsewhere)."""
        try:
            config = await self.grpc.get_model_config(TENSORRT_LLM.name, as_json=True,
                                                      client_timeout=PROBE_TIMEOUT_S)
            engine_dir = config["config"]["parameters"]["engine_dir"]["string_value"]
            limits = json.loads((Path(engine_dir) / "engine_config.json").read_text())["limits"]
            return {"max_seq_len": int(limits["max_seq_len"]), "max_input_len": int(limits["max_input_len"])}
        except Exception:  # no tensorrt_llm model, no engine_dir, folder elsewhere: unknown, not an error
            return {}

