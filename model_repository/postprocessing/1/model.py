"""Triton adapter (decoupled): released token ids -> text_output; a cancelled step that names a request_key
stops that request in tensorrt_llm (logic: qwen_triton.serving.postprocess, serving.cancellation)."""
import triton_python_backend_utils as pb_utils

from qwen_triton.schema import POSTPROCESSING
from qwen_triton.serving.cancellation import CancelRelay
from qwen_triton.serving.model_params import TextModelParams
from qwen_triton.serving.postprocess import Postprocessor
from qwen_triton.serving.wire_values import get_int
from qwen_triton.serving.triton_io import error_response, make_response, read_inputs, send_stop
from qwen_triton.text.tokenizer import QwenTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        params = TextModelParams.from_config(args["model_config"])
        self.postprocess = Postprocessor(QwenTokenizer.load(params.engine_dir))
        self.relay = CancelRelay(send_stop)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                values = read_inputs(request, POSTPROCESSING)
                outputs = self.postprocess.chunk(values)  # None for a probe: nothing to answer
                self.relay(get_int(values, "request_key"), request.is_cancelled, probe=outputs is None,
                           final=self.postprocess.ends_request(values))
                sender.send(None if outputs is None else make_response(POSTPROCESSING, outputs), flags=FINAL)
            except Exception as exc:
                sender.send(error_response(exc), flags=FINAL)
        return None
