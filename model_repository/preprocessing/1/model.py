"""Triton adapter: ensemble request -> ChatML prompt ids and tensorrt_llm inputs (logic: qwen_triton.serving)."""

from qwen_triton.schema import PREPROCESSING
from qwen_triton.serving.model_params import TextModelParams
from qwen_triton.serving.preprocess import Preprocessor
from qwen_triton.serving.requests import ChatRequest
from qwen_triton.serving.triton_io import error_response, make_response, read_inputs


class TritonPythonModel:
    def initialize(self, args):
        params = TextModelParams.from_config(args["model_config"])
        self.preprocess = Preprocessor.from_engine_dir(params.engine_dir)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                chat = ChatRequest.from_inputs(read_inputs(request, PREPROCESSING))
                responses.append(make_response(PREPROCESSING, self.preprocess(chat)))
            except Exception as exc:  # one bad request must not fail the batch
                responses.append(error_response(exc))
        return responses
