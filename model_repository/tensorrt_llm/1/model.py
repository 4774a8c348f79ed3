"""Triton adapter (decoupled): hands each request to the LLM engine thread, which answers through the
request's response sender. execute() never waits for generation. Logic: qwen_triton.serving.llm_service."""
import json
import os

import triton_python_backend_utils as pb_utils

from qwen_triton.schema import TENSORRT_LLM
from qwen_triton.serving.llm_service import LLMService
from qwen_triton.serving.model_params import LLMModelParams
from qwen_triton.serving.nv_metrics import NvMetrics
from qwen_triton.serving.llm_request import parse_llm_inputs
from qwen_triton.serving.stats_reporter import SampledObserver
from qwen_triton.serving.responses import (FIRST_RESPONSE_BUCKETS_S, FIRST_RESPONSE_METRIC, INTER_TOKEN_BUCKETS_S,
                                           INTER_TOKEN_METRIC)
from qwen_triton.serving.triton_io import error_response, make_response, read_inputs

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class SenderResponder:
    """Responder over one request's response sender; called from the engine thread."""

    def __init__(self, sender):
        self.sender = sender

    def send(self, outputs, final):
        self.sender.send(make_response(TENSORRT_LLM, outputs), flags=FINAL if final else 0)

    def fail(self, exc):
        self.sender.send(error_response(exc), flags=FINAL)

    def is_cancelled(self):
        return self.sender.is_cancelled()


class EngineMetrics:
    """Engine occupancy as Triton gauges on the metrics port (qwen_engine_*, and NVIDIA's nv_trt_llm_* families
    labelled with this model's name and version); time to first response and between streamed responses as
    histograms (FIRST_RESPONSE_METRIC, INTER_TOKEN_METRIC). docs/metrics.md lists them all."""

    FIELDS = {"running": ("qwen_engine_running_requests", "sequences in the running batch"),
              "waiting": ("qwen_engine_waiting_requests", "sequences queued for admission"),
              "free_kv_blocks": ("qwen_engine_free_kv_blocks", "free paged-KV-cache blocks"),
              "reused_kv_blocks": ("qwen_engine_reused_kv_blocks", "prompt KV blocks reused from the cache, since start"),
              "missed_kv_blocks": ("qwen_engine_missed_kv_blocks", "full prompt KV blocks computed, since start")}

    def __init__(self, model="tensorrt_llm", version="1"):
        # The families must outlive their metrics: the backend refuses to set a metric of a freed family.
        self.families = {field: pb_utils.MetricFamily(name=name, description=text, kind=pb_utils.MetricFamily.GAUGE)
                         for field, (name, text) in self.FIELDS.items()}
        self.gauges = {field: family.Metric(labels={}) for field, family in self.families.items()}
        self.published = {}  # field -> the value last set
        self.first_family = pb_utils.MetricFamily(
            name=FIRST_RESPONSE_METRIC, kind=pb_utils.MetricFamily.HISTOGRAM,
            description="seconds from a request reaching tensorrt_llm to its first response leaving it")
        self.first_response = self.first_family.Metric(labels={}, buckets=list(FIRST_RESPONSE_BUCKETS_S))
        self.inter_token_family = pb_utils.MetricFamily(
            name=INTER_TOKEN_METRIC, kind=pb_utils.MetricFamily.HISTOGRAM,
            description="seconds between consecutive responses with tokens of a streaming request leaving tensorrt_llm")
        self.inter_token = self.inter_token_family.Metric(labels={}, buckets=list(INTER_TOKEN_BUCKETS_S))
        self.observe_inter_token = SampledObserver(self.inter_token.observe)  # no IPC on the outbox thread
        self.nv = NvMetrics(pb_utils, model, version)

    def observe_first_response(self, seconds):
        self.first_response.observe(seconds)


    def __call__(self, stats):
        # Stats arrive after every step (iteration and timestamp always change) and every set is an IPC round
        # trip: only values that changed are set, as NvMetrics does.
        for field, gauge in self.gauges.items():
            value = getattr(stats, field)
            if value is not None and self.published.get(field) != value:  # None: the runtime cannot tell
                gauge.set(value)
                self.published[field] = value
        self.nv(stats)


class TritonPythonModel:
    def initialize(self, args):
        params = LLMModelParams.from_config(args["model_config"])
        # Triton passes both; the config's name stands in where a caller's args carry only the config.
        metrics = EngineMetrics(args.get("model_name") or json.loads(args["model_config"])["name"],
                                args.get("model_version", "1"))
        self.service = LLMService.from_params(params, on_stats=metrics,
                                              on_first_response=metrics.observe_first_response,
                                              on_inter_token=metrics.observe_inter_token, on_stall=self.exit_stub)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"tensorrt_llm: runtime={params.runtime} engine={params.engine_dir}")

    def execute(self, requests):
        for request in requests:
            responder = SenderResponder(request.get_response_sender())
            try:
                self.service.handle(parse_llm_inputs(read_inputs(request, TENSORRT_LLM)), responder)
            except Exception as exc:  # answered per request; the engine keeps serving the others
                self.service.refuse(responder, exc)
        return None

    @staticmethod
    def exit_stub():
        """A stalled engine cannot be stopped from here: the stub exits, and the launcher, seeing a dead stub,
        restarts the server (plain tritonserver only fails later requests: "Stub process is not healthy")."""
        pb_utils.Logger.log_error("tensorrt_llm: the engine stalled; exiting the stub")
        os._exit(1)

    def finalize(self):
        self.service.shutdown()
