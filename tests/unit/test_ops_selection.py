"""Which kernels run is decided once, by models/ops.py select_ops(device, dtype), and the model only calls the
ops it was given (no GPU needed: Triton's presence is mocked, and the CUDA set is only inspected, never run).
The table: CPU or no Triton -> the torch reference set; CUDA with Triton -> the fused Triton ops and paged
decode attention at every dtype, the split-K GEMV for linear layers only in half precision and only up to
gemv.max_rows rows. tests/gpu/test_kernels.py checks the same on a real CUDA device."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from qwen_triton.config import load_engine_folder
from qwen_triton.models import fused_ops, gemv, ops, paged_attention
from qwen_triton.models.qwen import AttentionBatch, QwenForCausalLM
from qwen_triton.runtime.loader import load_model

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TORCH_FIELDS = dict(linear=F.linear, rms_norm=ops.rms_norm, add_rms_norm=ops.add_rms_norm,
                    rope_write_kv=ops.rope_write_kv, silu_mul=ops.silu_mul, prefill_attention=ops.prefill_attention,
                    decode_attention=ops.decode_attention, paged_decode=False, dense_operands=False)
TRITON_FIELDS = dict(rms_norm=fused_ops.rms_norm, add_rms_norm=fused_ops.add_rms_norm,
                     rope_write_kv=fused_ops.rope_write_kv, silu_mul=fused_ops.silu_mul,
                     prefill_attention=ops.prefill_attention, decode_attention=paged_attention.decode,
                     paged_decode=True, dense_operands=True)


def _fields(selected: ops.Ops, names) -> dict:
    return {name: getattr(selected, name) for name in names}


def test_triton_is_detected_as_importable_or_not():
    assert ops.TRITON == (importlib.util.find_spec("triton") is not None)


@pytest.mark.parametrize("triton", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_models_get_the_torch_reference_ops(monkeypatch, triton, dtype):
    monkeypatch.setattr(ops, "TRITON", triton)
    selected = ops.select_ops("cpu", dtype)
    assert selected.name == "torch" and _fields(selected, TORCH_FIELDS) == TORCH_FIELDS


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_without_triton_gets_the_torch_reference_ops(monkeypatch, dtype):
    monkeypatch.setattr(ops, "TRITON", False)
    selected = ops.select_ops(torch.device("cuda", 0), dtype)
    assert selected.name == "torch" and _fields(selected, TORCH_FIELDS) == TORCH_FIELDS


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("dtype,linear", [(torch.float32, F.linear), (torch.float16, ops.small_batch_linear),
                                          (torch.bfloat16, ops.small_batch_linear)])
def test_cuda_with_triton_gets_the_triton_ops_and_the_gemv_only_in_half_precision(monkeypatch, device, dtype, linear):
    monkeypatch.setattr(ops, "TRITON", True)
    selected = ops.select_ops(device, dtype)
    assert selected.name == "triton" and _fields(selected, TRITON_FIELDS) == TRITON_FIELDS
    assert selected.linear is linear


# (weight rows N, columns K) -> the most rows the GEMV takes: 16 for the square 4096 x 4096 o_proj, 64 where a
# side is longer than 4,096 (qkv, gate_up, down, lm_head), 16 for small shapes.
ROW_LIMITS = {(4096, 4096): 16, (12288, 4096): 64, (4096, 11008): 64, (300, 1000): 16}


@pytest.mark.parametrize("shape,limit", ROW_LIMITS.items())
def test_half_precision_cuda_linear_takes_the_gemv_up_to_the_row_limit_then_cublas(monkeypatch, shape, limit):
    calls = []
    monkeypatch.setattr(gemv, "linear", lambda x, w, b=None: calls.append(("gemv", x.shape[0])) or x @ w.t())
    monkeypatch.setattr(ops.F, "linear", lambda x, w, b=None: calls.append(("cublas", x.shape[0])) or x @ w.t())
    weight = torch.zeros(shape)
    for rows in (1, limit - 1, limit, limit + 1, 2 * limit):
        ops.small_batch_linear(torch.zeros(rows, shape[1]), weight)
    assert calls == [("gemv", 1), ("gemv", limit - 1), ("gemv", limit), ("cublas", limit + 1), ("cublas", 2 * limit)]


def test_the_dense_ops_refuse_strided_or_mistyped_operands_at_load():
    good, strided = torch.zeros(8, 4), torch.zeros(4, 8).t()
    cuda_ops = ops.triton_ops(torch.float32)
    ops.check_operands(cuda_ops, [("w", good)], torch.float32)
    with pytest.raises(ValueError, match="lm_head.weight"):
        ops.check_operands(cuda_ops, [("w", good), ("lm_head.weight", strided)], torch.float32)
    with pytest.raises(ValueError, match="kv_cache"):
        ops.check_operands(cuda_ops, [("kv_cache[0][0]", good.half())], torch.float32)
    ops.check_operands(ops.TORCH_OPS, [("lm_head.weight", strided), ("c", good.half())], torch.float32)  # any strides


def test_the_loader_selects_the_ops_once_for_the_whole_model(tiny_engine):
    model = load_model(load_engine_folder(tiny_engine), "cpu", torch.float32)
    assert model.ops is ops.select_ops("cpu", torch.float32) and model.ops.name == "torch"
    holders = [m for m in model.modules() if hasattr(m, "ops")]
    assert len(holders) > 3 * model.config.num_hidden_layers and all(m.ops is model.ops for m in holders)


def _recording(calls: dict) -> ops.Ops:
    def wrap(name, fn):
        def call(*args):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args)
        return call

    fields = {name: wrap(name, fn) for name, fn in _fields(ops.TORCH_OPS, TORCH_FIELDS).items() if callable(fn)}
    return ops.Ops(name="recording", paged_decode=False, dense_operands=False, **fields)


@torch.inference_mode()
def test_the_model_computes_only_through_its_ops(tiny_engine):
    """A mixed step (2 decodes + a 5-token prompt) through a model whose ops count their calls gives the
    reference model's hidden states, and every layer's norms, projections, RoPE and attention went through them."""
    folder = load_engine_folder(tiny_engine)
    reference = load_model(folder, "cpu", torch.float32)
    calls = {}
    model = QwenForCausalLM(folder.config.model, _recording(calls))
    model.load_state_dict(reference.state_dict())
    m = folder.config.model
    caches = [torch.zeros(2, 4, 16, m.num_key_value_heads, m.head_dim) for _ in range(m.num_hidden_layers)]
    batch = AttentionBatch.decode(torch.arange(7), torch.tensor([[0], [1]]), torch.tensor([3, 5]), prefill_lens=(5,))
    ids, positions = torch.arange(10, 17), torch.tensor([2, 4, 0, 1, 2, 3, 4])
    got = model(ids, positions, batch, [tuple(c) for c in caches])
    want = reference(ids, positions, batch, [tuple(c) for c in torch.zeros_like(torch.stack(caches))])
    assert torch.equal(got, want)
    L = m.num_hidden_layers
    assert calls == {"linear": 4 * L, "rms_norm": 1, "add_rms_norm": 2 * L, "rope_write_kv": L, "silu_mul": L,
                     "prefill_attention": L, "decode_attention": L}
