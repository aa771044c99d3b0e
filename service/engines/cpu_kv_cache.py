"""The KV cache size vLLM gets on CPU when the operator names none.

vLLM's CPU backend reads `gpu_memory_utilization` (0.9) as a fraction of the
NUMA node's memory and refuses to start when that much is not free, which on a
shared machine it never is. The service knows what the cache must hold:
`max_concurrency` sequences of `max_model_len` tokens. So it asks for exactly
that (rounded up to whole blocks), and refuses to start, with the figures and
the remedies in one message, when that plus the weights does not fit the
memory the node has free.

Pure arithmetic over the checkpoint's config.json: no vLLM, no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from service import errors

# vLLM's CPU attention pages the cache in blocks of up to this many tokens: each
# sequence may hold one partly filled block beyond its length.
BLOCK_TOKENS = 256
# The cache and the weights together may take this share of the free memory; the
# rest is activations, the image processor and the engine's own buffers.
USABLE_SHARE = 0.8
MIN_BYTES = 32 << 20

_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


@dataclass(frozen=True)
class KvCachePlan:
    bytes: int
    max_model_len: int
    sequences: int
    bytes_per_token: int
    weights_bytes: int


def plan_cpu_kv_cache(
    model_dir: Path, max_model_len: int | None, sequences: int, dtype: str
) -> KvCachePlan:
    """The cache `sequences` sequences of `max_model_len` tokens need (the model's own
    context when None), from the text model's layers, KV heads and head size."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config", config)
    layers = int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    length = max_model_len or int(text.get("max_position_embeddings") or 4096)
    per_token = 2 * layers * kv_heads * head_dim * _dtype_bytes(dtype, text, config)
    tokens = sequences * (math.ceil(length / BLOCK_TOKENS) + 1) * BLOCK_TOKENS
    weights = sum(
        f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in model_dir.glob(pattern)
    )
    return KvCachePlan(max(per_token * tokens, MIN_BYTES), length, sequences, per_token, weights)


def check_fits(plan: KvCachePlan, available_bytes: int) -> None:
    """Refuse to start (NotReady, a clear message) when cache and weights do not fit."""
    needed = plan.bytes + plan.weights_bytes
    if needed <= available_bytes * USABLE_SHARE:
        return
    raise errors.NotReady(
        f"vLLM on CPU cannot start: a KV cache for {plan.sequences} sequence(s) of "
        f"{plan.max_model_len} tokens needs {_gib(plan.bytes)} GiB, plus {_gib(plan.weights_bytes)}"
        f" GiB of weights, and the memory node has {_gib(available_bytes)} GiB free (at most "
        f"{USABLE_SHARE:.0%} of it is used). Lower --max-model-len or --max-concurrency, or "
        "set --kv-cache-memory-bytes explicitly."
    )


def _dtype_bytes(dtype: str, text: dict[str, object], config: dict[str, object]) -> int:
    if dtype != "auto":
        return _DTYPE_BYTES.get(dtype, 4)
    declared = text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype")
    declared = declared or config.get("dtype")
    return _DTYPE_BYTES.get(str(declared), 4)  # unknown: the larger, so it surely fits


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"
