"""The paged KV cache takes kv_cache_free_gpu_mem_fraction of the memory free after the weights, never more than
max_batch_size x max_seq_len needs (unless prefix reuse keeps finished prefixes in the rest), and refuses to
start when one full sequence does not fit."""
from types import SimpleNamespace

import pytest
import torch

from qwen_triton.config import EngineConfig, EngineLimits, ModelConfig
from qwen_triton.errors import ConfigError
from qwen_triton.runtime.model_runner import ModelRunner

MODEL = ModelConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4)
BLOCK_BYTES = 2 * 2 * 16 * 4 * 16 * 2  # K and V x layers x block_size x kv heads x head_dim x fp16


def kv_blocks(monkeypatch, free_bytes: int, **limits) -> int:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 2 * free_bytes))
    config = EngineConfig(model=MODEL, limits=EngineLimits(max_input_len=64, max_seq_len=128, **limits))
    runner = SimpleNamespace(config=config, block_size=16, device=torch.device("cuda"), dtype=torch.float16)
    return ModelRunner._kv_blocks(runner)


def test_the_cache_takes_the_configured_share_of_free_memory(monkeypatch):
    free = 1000 * BLOCK_BYTES
    big_batch = {"max_batch_size": 10_000}  # the memory, not the batch, bounds the cache
    assert kv_blocks(monkeypatch, free, kv_cache_free_gpu_mem_fraction=0.5, **big_batch) == 499  # less scratch
    assert kv_blocks(monkeypatch, free, kv_cache_free_gpu_mem_fraction=0.9, **big_batch) == 899
    assert kv_blocks(monkeypatch, free, **big_batch) == 849  # default 0.85


def test_the_cache_stops_at_what_the_batch_can_use(monkeypatch):
    assert kv_blocks(monkeypatch, 10**6 * BLOCK_BYTES, max_batch_size=4) == 4 * 128 // 16


def test_with_prefix_reuse_the_cache_takes_its_whole_share_to_keep_finished_prefixes(monkeypatch):
    free = 1000 * BLOCK_BYTES
    assert kv_blocks(monkeypatch, free, max_batch_size=4, enable_kv_cache_reuse=True) == 849


def test_too_little_memory_for_one_sequence_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="max_seq_len"):
        kv_blocks(monkeypatch, 8 * BLOCK_BYTES, kv_cache_free_gpu_mem_fraction=0.5)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_the_fraction_is_validated(fraction):
    with pytest.raises(ConfigError, match="kv_cache_free_gpu_mem_fraction"):
        EngineLimits(kv_cache_free_gpu_mem_fraction=fraction)
