"""Triton adapter: released token ids -> text_output (logic: qwen_triton.serving.postprocess)."""

from qwen_triton.schema import POSTPROCESSING
from qwen_triton.serving.model_params import TextModelParams
from qwen_triton.serving.postprocess import Postprocessor
from qwen_triton.serving.requests import get_int
from qwen_triton.serving.triton_io import error_response, make_response, read_inputs
from qwen_triton.text.tokenizer import QwenTokenizer


class TritonPythonModel:
    def initialize(self, args):
        params = TextModelParams.from_config(args["model_config"])
        self.postprocess = Postprocessor(QwenTokenizer.load(params.engine_dir))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                values = read_inputs(request, POSTPROCESSING)
                outputs = self.postprocess(values["tokens_batch"], get_int(values, "sequence_length"))
                responses.append(make_response(POSTPROCESSING, outputs))
            except Exception as exc:
                responses.append(error_response(exc))
        return responses
