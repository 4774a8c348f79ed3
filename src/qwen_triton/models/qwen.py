"""Qwen2-style decoder (nn.Modules only) over a paged KV cache, serving Qwen-7B-Chat v1 and Qwen1.5/2/2.5 once
build/ has fused QKV and gate/up; parameter names equal the engine's safetensors names. Its layers compute
through the Ops they are given (models/ops.py, chosen once at load) and never choose a kernel; it must not know
loading, scheduling, cache sizing or sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .ops import Ops

KVCache = tuple[torch.Tensor, torch.Tensor]  # one layer's (k_cache, v_cache), each (num_blocks, block_size, Hkv, D)


@dataclass(frozen=True)
class AttentionBatch:
    """Where this step's T flattened tokens live, passed explicitly to every layer.

    Rows [0, B) decode one token each, their last (B = block_tables rows, 0 without block tables); rows
    [B, T) are prefilled sequences, concatenated, each from its first token not in the cache (token 0 unless
    a reused prefix holds cached_lens tokens; no chunking); T = B + sum(seq_lens). A step may hold both (mixed).
    """

    slot_mapping: torch.Tensor  # (T,) long: flat cache slot (block * block_size + offset) each token's K/V goes to
    # Prefill: tokens per sequence. Python ints, so splitting the batch needs no device sync.
    seq_lens: tuple[int, ...] = ()
    # Decode: (B, max_blocks) long, padded with any valid block id; padding is masked by context_lens.
    block_tables: torch.Tensor | None = None
    context_lens: torch.Tensor | None = None  # decode: (B,) long, tokens visible to the new one, itself included
    # Prefill with reused prefixes: tokens per sequence already cached (Python ints) and the prefilled
    # sequences' (P, max_blocks) block tables; both empty when every prefill starts at token 0.
    cached_lens: tuple[int, ...] = ()
    prefill_tables: torch.Tensor | None = None

    @property
    def num_decode(self) -> int:
        return 0 if self.block_tables is None else self.block_tables.shape[0]

    @classmethod
    def prefill(cls, slot_mapping: torch.Tensor, seq_lens: tuple[int, ...], cached_lens: tuple[int, ...] = (),
                prefill_tables: torch.Tensor | None = None) -> "AttentionBatch":
        return cls(slot_mapping, seq_lens=tuple(seq_lens), cached_lens=tuple(cached_lens),
                   prefill_tables=prefill_tables)

    @classmethod
    def decode(cls, slot_mapping: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor,
               prefill_lens: tuple[int, ...] = ()) -> "AttentionBatch":
        """prefill_lens: sequences prefilled after the decode rows in the same step (mixed)."""
        return cls(slot_mapping, seq_lens=tuple(prefill_lens), block_tables=block_tables, context_lens=context_lens)


class Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, ops: Ops, bias: bool):
        super().__init__(in_features, out_features, bias=bias)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(x, self.weight, self.bias)  # (T, in) -> (T, out)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, ops: Ops):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, self.weight, self.eps)  # (T, N)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual): one op, so a kernel can fuse the residual add into the norm."""
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape (T, 1, D), computed in float32 and cast (as HF does), shared by all layers."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta ** exponents)  # (D/2,)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, D): rotate_half pairs i with i + D/2
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, ops: Ops):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        q_size, kv_size = self.num_heads * config.head_dim, self.num_kv_heads * config.head_dim
        self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, ops, bias=True)  # rows [q; k; v]
        self.o_proj = Linear(q_size, config.hidden_size, ops, bias=False)
        self.ops = ops

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], batch: AttentionBatch,
                kv_cache: KVCache) -> torch.Tensor:
        T = x.shape[0]
        qkv = self.qkv_proj(x)  # (T, (H + 2 Hkv) * D)
        k_cache, v_cache = kv_cache
        # Write before reading: a decode token attends to itself through the cache.
        q, k, v = self.ops.rope_write_kv(qkv, self.num_heads, self.num_kv_heads, *rope, batch.slot_mapping,
                                         k_cache, v_cache)  # (T, H, D), (T, Hkv, D), (T, Hkv, D)
        B = batch.num_decode
        if B == 0:
            out = self._prefill(q, k, v, k_cache, v_cache, batch)
        elif not batch.seq_lens:
            out = self._decode(q, k_cache, v_cache, batch)
        else:  # mixed: decode rows first, then the prefilled sequences
            out = torch.cat((self._decode(q[:B], k_cache, v_cache, batch),
                             self._prefill(q[B:], k[B:], v[B:], k_cache, v_cache, batch)))
        return self.o_proj(out.reshape(T, -1))  # (T, H, D) -> (T, hidden)

    def _prefill(self, q, k, v, k_cache, v_cache, batch: AttentionBatch) -> torch.Tensor:
        if batch.prefill_tables is None:  # every sequence from token 0: the cache is only written
            return self.ops.prefill_attention(q, k, v, batch.seq_lens)
        return self.ops.prefix_prefill_attention(q, k_cache, v_cache, batch.seq_lens, batch.cached_lens,
                                                 batch.prefill_tables)

    def _decode(self, q, k_cache, v_cache, batch: AttentionBatch) -> torch.Tensor:
        return self.ops.decode_attention(q, k_cache, v_cache, batch.block_tables, batch.context_lens)  # (B, H, D)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, ops: Ops):
        super().__init__()
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, ops, bias=False)  # rows [gate; up]
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, ops, bias=False)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (T, 2I): [gate | up]
        return self.down_proj(self.ops.silu_mul(gate_up))  # (T, I) -> (T, hidden)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, ops: Ops):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.self_attn = Attention(config, ops)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.mlp = MLP(config, ops)

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
    def __init__(self, config: ModelConfig, ops: Ops):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, ops) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)


class QwenForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig, ops: Ops):
        """ops: the kernels every layer computes with (models/ops.py select_ops), fixed for the model's life."""
        super().__init__()
        self.config = config
        self.ops = ops
        self.model = QwenModel(config, ops)
        # Tied checkpoints (small Qwen2) store no lm_head: logits reuse the embedding matrix.
        untied = not config.tie_word_embeddings
        self.lm_head = Linear(config.hidden_size, config.vocab_size, ops, bias=False) if untied else None

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
        if self.lm_head is None:
            return self.ops.linear(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)  # a Linear, or a QuantLinear (--quantize-head)
