"""Triton adapter (decoupled): NVIDIA's tensorrt_llm_bls, the ensemble's pipeline in one model; each request
runs on a thread of its own, so execute() returns at once (logic: qwen_triton.serving.bls, docs/bls.md)."""
from qwen_triton.serving.bls import BlsPipeline
from qwen_triton.serving.model_params import TextModelParams


class TritonPythonModel:
    def initialize(self, args):
        self.pipeline = BlsPipeline.from_engine_dir(TextModelParams.from_config(args["model_config"]).engine_dir)

    def execute(self, requests):
        for request in requests:
            self.pipeline.submit(request)
        return None

    def finalize(self):
        self.pipeline.close()
