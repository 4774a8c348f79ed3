"""Qwen2-style decoder (nn.Modules only) over a paged KV cache, serving Qwen-7B-Chat v1 and Qwen1.5/2/2.5 once
build/ has fused QKV and gate/up; parameter names equal the engine's safetensors names. It knows attention over
block tables and must not know loading, scheduling, cache sizing or sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ModelConfig
from . import fused_ops, gemv, paged_attention

PREFILL_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
KVCache = tuple[torch.Tensor, torch.Tensor]  # one layer's (k_cache, v_cache), each (num_blocks, block_size, Hkv, D)


@dataclass(frozen=True)
class AttentionBatch:
    """Where this step's T flattened tokens live, passed explicitly to every layer.

    Rows [0, B) decode one token each, their last (B = block_tables rows, 0 without block tables); rows
    [B, T) are whole sequences prefilled from token 0 (no prefix cache, no chunking), concatenated;
    T = B + sum(seq_lens). A step may hold both (mixed).
    """

    slot_mapping: torch.Tensor  # (T,) long: flat cache slot (block * block_size + offset) each token's K/V goes to
    # Prefill: tokens per sequence. Python ints, so splitting the batch needs no device sync.
    seq_lens: tuple[int, ...] = ()
    # Decode: (B, max_blocks) long, padded with any valid block id; padding is masked by context_lens.
    block_tables: torch.Tensor | None = None
    context_lens: torch.Tensor | None = None  # decode: (B,) long, tokens visible to the new one, itself included

    @property
    def num_decode(self) -> int:
        return 0 if self.block_tables is None else self.block_tables.shape[0]

    @classmethod
    def prefill(cls, slot_mapping: torch.Tensor, seq_lens: tuple[int, ...]) -> "AttentionBatch":
        return cls(slot_mapping, seq_lens=tuple(seq_lens))

    @classmethod
    def decode(cls, slot_mapping: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor,
               prefill_lens: tuple[int, ...] = ()) -> "AttentionBatch":
        """prefill_lens: sequences prefilled after the decode rows in the same step (mixed)."""
        return cls(slot_mapping, seq_lens=tuple(prefill_lens), block_tables=block_tables, context_lens=context_lens)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with few-row half-precision CUDA calls (decode steps) going to the split-K GEMV."""
    return gemv.linear(x, weight, bias) if gemv.usable(x, weight) else F.linear(x, weight, bias)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_ops.available(x) and x.dim() == 2 and x.stride(1) == 1 and x.dtype == self.weight.dtype:
            return fused_ops.rms_norm(x, self.weight, self.eps)
        return self._reference(x)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual): the residual add fused into the norm on CUDA."""
        if fused_ops.available(x) and x.dim() == 2 and x.stride(1) == 1 and x.dtype == self.weight.dtype:
            return fused_ops.add_rms_norm(x, residual.contiguous(), self.weight, self.eps)
        total = x + residual
        return self._reference(total), total

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        # As HF Qwen2: normalise in float32, cast back, then scale in the weight's dtype.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape (T, 1, D), computed in float32 and cast (as HF does), shared by all layers."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta ** exponents)  # (D/2,)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, D): rotate_half pairs i with i + D/2
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin  # (T, H, D)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.sizes = (q_size, kv_size, kv_size)
        self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, bias=True)  # rows [q; k; v]
        self.o_proj = Linear(q_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], batch: AttentionBatch,
                kv_cache: KVCache) -> torch.Tensor:
        T = x.shape[0]
        qkv = self.qkv_proj(x)  # (T, (H + 2 Hkv) * D)
        k_cache, v_cache = kv_cache
        # Write before reading: a decode token attends to itself through the cache.
        if fused_ops.available(qkv) and qkv.stride(1) == 1 and k_cache.is_contiguous() and k_cache.dtype == qkv.dtype:
            q, k, v = fused_ops.rope_write_kv(qkv, self.num_heads, self.num_kv_heads, *rope, batch.slot_mapping,
                                              k_cache, v_cache)
        else:
            q, k, v = self._rope_write_kv(qkv, rope, batch.slot_mapping, kv_cache)
        B = batch.num_decode
        if B == 0:
            out = self._prefill(q, k, v, batch.seq_lens)
        elif not batch.seq_lens:
            out = self._decode(q, k_cache, v_cache, batch)
        else:  # mixed: decode rows first, then the prefilled sequences
            out = torch.cat((self._decode(q[:B], k_cache, v_cache, batch),
                             self._prefill(q[B:], k[B:], v[B:], batch.seq_lens)))
        return self.o_proj(out.reshape(T, -1))

    def _rope_write_kv(self, qkv, rope, slot_mapping, kv_cache):
        T = qkv.shape[0]
        q, k, v = qkv.split(self.sizes, dim=-1)
        q = apply_rope(q.view(T, self.num_heads, self.head_dim), *rope)  # (T, H, D)
        k = apply_rope(k.view(T, self.num_kv_heads, self.head_dim), *rope)  # (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.head_dim)  # (T, Hkv, D)
        for cache, new in zip(kv_cache, (k, v)):
            cache.view(-1, self.num_kv_heads, self.head_dim)[slot_mapping] = new
        return q, k, v

    def _expand_kv(self, kv: torch.Tensor, head_dim: int) -> torch.Tensor:
        # GQA: kv head j serves query heads j*g .. j*g + g - 1 (HF repeat_kv order).
        groups = self.num_heads // self.num_kv_heads
        return kv if groups == 1 else kv.repeat_interleave(groups, dim=head_dim)

    def _prefill(self, q, k, v, seq_lens: tuple[int, ...]) -> torch.Tensor:
        # Every sequence starts at token 0, so its attention is causal self-attention over its own tokens
        # and the cache is only written, never read.
        # 4-D inputs: with 3-D ones SDPA takes its math path (a float32 (H, n, n) softmax) on CUDA. Not cuDNN:
        # it builds a plan per new sequence length, on the host (half the engine thread under load).
        outs, start = [], 0
        with sdpa_kernel(PREFILL_SDPA_BACKENDS):
            for n in seq_lens:
                qs, ks, vs = (t[None, start:start + n].transpose(1, 2) for t in (q, k, v))  # (1, H|Hkv, n, D)
                o = F.scaled_dot_product_attention(qs, self._expand_kv(ks, 1), self._expand_kv(vs, 1), is_causal=True)
                outs.append(o[0].transpose(0, 1))  # (n, H, D)
                start += n
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # (T, H, D)

    def _decode(self, q, k_cache, v_cache, batch: AttentionBatch) -> torch.Tensor:
        if paged_attention.available(q):
            return paged_attention.decode(q, k_cache, v_cache, batch.block_tables, batch.context_lens)
        B, max_blocks = batch.block_tables.shape
        L = max_blocks * k_cache.shape[1]
        shape = (B, L, self.num_kv_heads, self.head_dim)
        keys = k_cache[batch.block_tables].view(shape).transpose(1, 2)  # (B, Hkv, L, D)
        values = v_cache[batch.block_tables].view(shape).transpose(1, 2)
        visible = torch.arange(L, device=q.device)[None, :] < batch.context_lens[:, None]  # (B, L)
        out = F.scaled_dot_product_attention(q[:, :, None, :], self._expand_kv(keys, 1), self._expand_kv(values, 1),
                                             attn_mask=visible[:, None, None, :])  # (B, H, 1, D)
        return out[:, :, 0, :]  # (B, H, D)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)  # rows [gate; up]
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (T, 2I): [gate | up]
        if fused_ops.available(gate_up) and gate_up.dim() == 2 and gate_up.is_contiguous():
            return self.down_proj(fused_ops.silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, residual, rope, batch: AttentionBatch, kv_cache: KVCache):
        """(x, residual) -> (mlp output, residual before it); the stream is residual + x. residual None in
        the first layer. Carrying the two apart lets each add fuse into the norm that follows it."""
        if residual is None:
            h, residual = self.input_layernorm(x), x
        else:
            h, residual = self.input_layernorm.add_forward(x, residual)
        h, residual = self.post_attention_layernorm.add_forward(self.self_attn(h, rope, batch, kv_cache), residual)
        return self.mlp(h), residual


class QwenModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class QwenForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = QwenModel(config)
        # Tied checkpoints (small Qwen2) store no lm_head: logits reuse the embedding matrix.
        untied = not config.tie_word_embeddings
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False) if untied else None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                kv_caches: list[KVCache]) -> torch.Tensor:
        """input_ids, positions: (T,) -> final-normed hidden states (T, hidden)."""
        x = self.model.embed_tokens(input_ids)  # (T, hidden)
        rope = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        residual = None
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            x, residual = layer(x, residual, rope, batch, kv_cache)
        return self.model.norm.add_forward(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, hidden) rows wanted (last token of each sequence) -> (N, vocab) in the model's dtype."""
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return linear(hidden, weight)
