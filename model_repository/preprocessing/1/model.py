"""Triton adapter: ensemble request -> ChatML prompt ids and tensorrt_llm inputs (logic: qwen_triton.serving).
Unknown request parameters (HTTP generate keys that are not inputs) are refused by name."""

from qwen_triton.schema import PREPROCESSING
from qwen_triton.serving.model_params import TextModelParams
from qwen_triton.serving.preprocess import Preprocessor
from qwen_triton.serving.chat_request import ChatRequest
from qwen_triton.serving.wire_values import check_parameters
from qwen_triton.serving.triton_io import error_response, make_response, read_inputs


class TritonPythonModel:
    def initialize(self, args):
        params = TextModelParams.from_config(args["model_config"])
        self.preprocess = Preprocessor.from_engine_dir(params.engine_dir)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                check_parameters(request.parameters(), tuple(t.name for t in PREPROCESSING.inputs))
                chat = ChatRequest.from_inputs(read_inputs(request, PREPROCESSING))
                responses.append(make_response(PREPROCESSING, self.preprocess(chat)))
            except Exception as exc:  # one bad request must not fail the batch
                responses.append(error_response(exc))
        return responses
