"""The default KV cache on CPU: sized from the checkpoint's config for the worker's
concurrency and context, refused with figures and remedies when it cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import errors
from service.engines.cpu_kv_cache import (
    BLOCK_TOKENS,
    MIN_BYTES,
    check_fits,
    plan_cpu_kv_cache,
)


def checkpoint(tmp_path: Path, weights: int = 0, **text: object) -> Path:
    text_config = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "hidden_size": 4096, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
                   **text}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"text_config": text_config}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * weights)
    return tmp_path


def test_a_7b_llama_cache_is_layers_x_kv_heads_x_head_dim_per_token(tmp_path):
    plan = plan_cpu_kv_cache(checkpoint(tmp_path), 4096, 8, "auto")
    per_token = 2 * 32 * 8 * 128 * 2  # K and V, layers, KV heads, head size, bf16
    assert plan.bytes_per_token == per_token
    assert plan.bytes == per_token * 8 * (4096 // BLOCK_TOKENS + 1) * BLOCK_TOKENS
    assert plan.max_model_len == 4096 and plan.sequences == 8


def test_dtype_context_and_head_dim_come_from_flags_then_config(tmp_path):
    path = checkpoint(tmp_path, head_dim=32, max_position_embeddings=100_000)
    plan = plan_cpu_kv_cache(path, None, 1, "float32")
    assert plan.bytes_per_token == 2 * 32 * 8 * 32 * 4
    assert plan.max_model_len == 100_000  # the model's own context when not set


def test_a_tiny_model_still_gets_a_floor(tmp_path):
    path = checkpoint(tmp_path, num_hidden_layers=1, num_key_value_heads=1, hidden_size=32,
                      num_attention_heads=1)  # fmt: skip
    assert plan_cpu_kv_cache(path, 128, 1, "auto").bytes == MIN_BYTES


def test_a_cache_that_cannot_fit_refuses_with_figures_and_remedies(tmp_path):
    plan = plan_cpu_kv_cache(checkpoint(tmp_path, weights=1000), 4096, 8, "auto")
    check_fits(plan, available_bytes=plan.bytes * 2)  # fits: no error
    with pytest.raises(errors.NotReady) as info:
        check_fits(plan, available_bytes=plan.bytes)  # the weights and headroom do not
    message = info.value.message
    assert "8 sequence(s) of 4096 tokens" in message
    assert "--max-model-len" in message and "--kv-cache-memory-bytes" in message
