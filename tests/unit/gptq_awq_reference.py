"""The formats' reference pack and dequantize code, transcribed for the tests (the libraries need CUDA-era
dependencies that CI does not install); tests/support/quant_goldens/goldens.safetensors holds what the real
libraries made, so this transcription is itself checked against them (test_gptq_awq.py).

- auto-gptq 0.7.1 (PyPI wheel), auto_gptq/nn_modules/qlinear/qlinear_cuda.py: QuantLinear.pack (bits 2/4/8
  branch: the weight loop over rows of qweight, `zeros -= 1`, the zeros loop over columns of qzeros) and the
  torch branch of QuantLinear.forward (unpack with `wf`, `zeros + 1`, `scales[g_idx] * (weight - zeros[g_idx])`).
- AutoAWQ 0.2.7.post3 (PyPI wheel), awq/modules/linear/gemm.py: WQLinear_GEMM.from_linear (order_map
  [0, 2, 4, 6, 1, 3, 5, 7]); awq/utils/packing_utils.py: unpack_awq, reverse_awq_order, dequantize_gemm.
Only the arithmetic is kept; module plumbing (nn.Module buffers, devices) is left out.
"""
import numpy as np
import torch

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def gptq_pack(weight, scales, zeros, g_idx, bits):
    """QuantLinear.pack: weight (N, K) float, scales / zeros (N, G), g_idx (K,) -> (qweight, qzeros, scales)."""
    scales, zeros = scales.t().contiguous(), zeros.t().contiguous().clone()
    scale_zeros = zeros * scales
    infeatures = weight.shape[1]
    intweight = torch.cat([torch.round((weight[:, idx] + scale_zeros[g_idx[idx]]) / scales[g_idx[idx]])
                           .to(torch.int)[:, None] for idx in range(infeatures)], dim=1)
    intweight = intweight.t().contiguous().numpy().astype(np.uint32)
    i, row = 0, 0
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    while row < qweight.shape[0]:
        for j in range(i, i + (32 // bits)):
            qweight[row] |= intweight[j] << (bits * (j - i))
        i += 32 // bits
        row += 1
    zeros -= 1
    zeros = zeros.numpy().astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * bits), dtype=np.uint32)
    i, col = 0, 0
    while col < qzeros.shape[1]:
        for j in range(i, i + (32 // bits)):
            qzeros[:, col] |= zeros[:, j] << (bits * (j - i))
        i += 32 // bits
        col += 1
    return (torch.from_numpy(qweight.astype(np.int32)), torch.from_numpy(qzeros.astype(np.int32)),
            scales.half())


def gptq_dequantize(qweight, qzeros, scales, g_idx, bits):
    """QuantLinear.forward's torch branch, as the (K, N) weight it multiplies x by."""
    wf = torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
    small = torch.int16 if bits == 8 else torch.int8
    zeros = torch.bitwise_right_shift(torch.unsqueeze(qzeros, 2).expand(-1, -1, 32 // bits),
                                      wf.unsqueeze(0)).to(small)
    zeros = torch.bitwise_and(zeros, (2**bits) - 1) + 1
    zeros = zeros.reshape(scales.shape)
    weight = torch.bitwise_right_shift(torch.unsqueeze(qweight, 1).expand(-1, 32 // bits, -1),
                                       wf.unsqueeze(-1)).to(small)
    weight = torch.bitwise_and(weight, (2**bits) - 1)
    weight = weight.reshape(weight.shape[0] * weight.shape[1], weight.shape[2])
    scales = scales.float()
    return scales[g_idx.long()] * (weight - zeros[g_idx.long()])


def awq_pack(weight, scales, zeros, group_size, w_bit=4):
    """WQLinear_GEMM.from_linear: weight (N, K), scales / zeros (G, N) -> (qweight, qzeros, scales fp16)."""
    scale_zeros = zeros * scales
    scales = scales.clone().half()
    pack_num = 32 // w_bit
    intweight = torch.cat([torch.round((weight[:, idx] + scale_zeros[idx // group_size]) /
                                       scales[idx // group_size]).to(torch.int)[:, None]
                           for idx in range(weight.shape[1])], dim=1)
    intweight = intweight.t().contiguous().to(dtype=torch.int32)
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    qweight = torch.zeros((intweight.shape[0], intweight.shape[1] // 32 * w_bit), dtype=torch.int32)
    for col in range(intweight.shape[1] // pack_num):
        for i in range(pack_num):
            qweight[:, col] |= intweight[:, col * pack_num + order_map[i]] << (i * w_bit)
    zeros = zeros.to(dtype=torch.int32)
    qzeros = torch.zeros((zeros.shape[0], zeros.shape[1] // 32 * w_bit), dtype=torch.int32)
    for col in range(zeros.shape[1] // pack_num):
        for i in range(pack_num):
            qzeros[:, col] |= zeros[:, col * pack_num + order_map[i]] << (i * w_bit)
    return qweight, qzeros, scales


def awq_dequantize(qweight, qzeros, scales, bits, group_size):
    """packing_utils.dequantize_gemm (unpack_awq, reverse_awq_order, overflow masks): the (K, N) weight."""
    shifts = torch.arange(0, 32, bits)
    iweights = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweights = iweights.view(iweights.shape[0], -1)
    izeros = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    izeros = izeros.view(izeros.shape[0], -1)
    order = torch.arange(iweights.shape[-1], dtype=torch.int32).view(-1, 32 // bits)[:, AWQ_REVERSE_ORDER].view(-1)
    iweights, izeros = iweights[:, order], izeros[:, order]
    iweights = torch.bitwise_and(iweights, (2**bits) - 1)
    izeros = torch.bitwise_and(izeros, (2**bits) - 1)
    scales = scales.float().repeat_interleave(group_size, dim=0)
    izeros = izeros.repeat_interleave(group_size, dim=0)
    return (iweights - izeros) * scales


# --- A random quantized checkpoint packed by the reference code above (tests only) ---

V1_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj")
QWEN2_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj")


def rtn_quantize(weight, bits, group_size, symmetric):
    """auto-gptq's Quantizer arithmetic, round to nearest: weight (N, K) -> q (N, K), zeros (N, G), scales
    (N, G) (float16 values), and the dequantized float32 weight the packed tensors stand for. Asymmetric zeros
    are kept >= 1, as a v1 GPTQ zero of 0 cannot be stored (auto-gptq writes it as -1)."""
    n, k = weight.shape
    g = k if group_size == -1 else group_size
    groups = weight.float().reshape(n, k // g, g)
    maxq = 2**bits - 1
    if symmetric:
        scales = (2 * groups.abs().amax(-1) / maxq).clamp(min=1e-4).half().float()
        zeros = torch.full_like(scales, (maxq + 1) // 2)
    else:
        low, high = groups.amin(-1).clamp(max=0), groups.amax(-1).clamp(min=0)
        scales = ((high - low) / maxq).clamp(min=1e-4).half().float()
        zeros = torch.round(-low / scales).clamp(1, maxq)
    q = (torch.round(groups / scales[..., None]) + zeros[..., None]).clamp(0, maxq)
    dequantized = ((q - zeros[..., None]) * scales[..., None]).reshape(n, k)
    return q.reshape(n, k).int(), zeros.int(), scales, dequantized


def pack_linear(method, weight, bits, group_size, symmetric):
    """(packed tensors {suffix: tensor}, dequantized weight (N, K)) made by the reference packers."""
    q, zeros, scales, dequantized = rtn_quantize(weight, bits, group_size, symmetric)
    g = weight.shape[1] if group_size == -1 else group_size
    if method == "awq":
        qweight, qzeros, packed_scales = awq_pack(dequantized, scales.t().contiguous(), zeros.t().contiguous(), g)
        return {"qweight": qweight, "qzeros": qzeros, "scales": packed_scales}, dequantized
    g_idx = (torch.arange(weight.shape[1]) // g).int()
    qweight, qzeros, packed_scales = gptq_pack(dequantized, scales, zeros.float(), g_idx, bits)
    return {"qweight": qweight, "qzeros": qzeros, "scales": packed_scales, "g_idx": g_idx}, dequantized


def quantize_checkpoint(hf_dir, method, bits, group_size, symmetric=True):
    """Replaces the float linears of a make_random_checkpoint folder by packed ones, in place, and adds the
    quantization config as the published checkpoints carry it (v1: quantize_config.json, as Qwen-7B-Chat-Int4;
    Qwen2: config.json quantization_config). Returns the float32 state dict (checkpoint names) whose linears
    are the dequantized weights: what the imported engine must compute."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    hf_dir = Path(hf_dir)
    state = load_file(hf_dir / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    linears = V1_LINEARS if config["model_type"] == "qwen" else QWEN2_LINEARS
    stored, reference = {}, {}
    for name, tensor in state.items():
        prefix = name[:-len(".weight")]
        if name.endswith(".weight") and ".".join(prefix.split(".")[-2:]) in linears:
            packed, dequantized = pack_linear(method, tensor, bits, group_size, symmetric)
            stored |= {f"{prefix}.{suffix}": value for suffix, value in packed.items()}
            reference[name] = dequantized
        else:
            stored[name] = reference[name] = tensor
    save_file({k: v.contiguous() for k, v in stored.items()}, str(hf_dir / "model.safetensors"))
    if method == "awq":
        settings = {"quant_method": "awq", "bits": bits, "group_size": group_size, "zero_point": True,
                    "version": "gemm"}
    else:
        settings = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": False,
                    "sym": symmetric, "damp_percent": 0.01, "true_sequential": True, "static_groups": False}
    if config["model_type"] == "qwen" and method == "gptq":
        (hf_dir / "quantize_config.json").write_text(json.dumps({k: v for k, v in settings.items()
                                                                 if k != "quant_method"}, indent=2))
    else:
        config["quantization_config"] = settings
        (hf_dir / "config.json").write_text(json.dumps(config, indent=2))
    return reference
