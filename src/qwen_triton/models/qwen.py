"""Qwen2-style decoder (nn.Modules only) over a paged KV cache; serves Qwen-7B-Chat v1 and Qwen1.5/2/2.5
after build/ has fused QKV and gate/up. Parameter names equal the engine's safetensors names.
Knows attention over block tables; knows nothing of scheduling or sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


@dataclass(frozen=True)
class AttentionBatch:
    """Where this step's tokens live. Prefill: whole sequences from token 0, flattened (T = sum seq_lens).
    Decode: one token per sequence (T = B)."""

    is_prefill: bool
    slot_mapping: torch.Tensor  # (T,) flat cache slot each token's K/V is written to
    seq_lens: tuple[int, ...] = ()  # prefill only
    block_tables: torch.Tensor | None = None  # decode: (B, max_blocks), padded with 0
    context_lens: torch.Tensor | None = None  # decode: (B,) tokens visible, the new one included


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(positions: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.theta = config.rope_theta
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.sizes = (q_size, kv_size, kv_size)
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=True)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(self, x, positions, batch: AttentionBatch, kv_cache: tuple[torch.Tensor, torch.Tensor]):
        T = x.shape[0]
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = q.view(T, self.num_heads, self.head_dim)  # (T, H, D)
        k = k.view(T, self.num_kv_heads, self.head_dim)  # (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        cos, sin = rope(positions, self.head_dim, self.theta, q.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k_cache, v_cache = kv_cache  # (num_blocks, block_size, Hkv, D) each
        k_cache.view(-1, self.num_kv_heads, self.head_dim)[batch.slot_mapping] = k
        v_cache.view(-1, self.num_kv_heads, self.head_dim)[batch.slot_mapping] = v
        if batch.is_prefill:
            out = self._prefill(q, k, v, batch.seq_lens)
        else:
            out = self._decode(q, k_cache, v_cache, batch)
        return self.o_proj(out.reshape(T, -1))

    def _expand(self, kv: torch.Tensor, dim: int) -> torch.Tensor:
        groups = self.num_heads // self.num_kv_heads
        return kv if groups == 1 else kv.repeat_interleave(groups, dim=dim)

    def _prefill(self, q, k, v, seq_lens) -> torch.Tensor:
        outs, start = [], 0
        for n in seq_lens:
            qs, ks, vs = (t[start:start + n].transpose(0, 1) for t in (q, k, v))  # (H, n, D)
            outs.append(F.scaled_dot_product_attention(qs, self._expand(ks, 0), self._expand(vs, 0), is_causal=True))
            start += n
        return torch.cat([o.transpose(0, 1) for o in outs], dim=0)  # (T, H, D)

    def _decode(self, q, k_cache, v_cache, batch: AttentionBatch) -> torch.Tensor:
        B, max_blocks = batch.block_tables.shape
        L = max_blocks * k_cache.shape[1]
        keys = k_cache[batch.block_tables].view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        values = v_cache[batch.block_tables].view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        visible = torch.arange(L, device=q.device)[None, :] < batch.context_lens[:, None]  # (B, L)
        out = F.scaled_dot_product_attention(q[:, :, None, :], self._expand(keys, 1), self._expand(values, 1),
                                             attn_mask=visible[:, None, None, :])  # (B, H, 1, D)
        return out[:, :, 0, :]


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, positions, batch, kv_cache):
        x = x + self.self_attn(self.input_layernorm(x), positions, batch, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


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
        # Tied checkpoints (small Qwen2) carry no lm_head: logits reuse the embedding matrix.
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids, positions, batch: AttentionBatch, kv_caches) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)  # (T, hidden)
        for layer, kv_cache in zip(self.model.layers, kv_caches):
            x = layer(x, positions, batch, kv_cache)
        return self.model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return hidden @ weight.t()  # (N, vocab)
