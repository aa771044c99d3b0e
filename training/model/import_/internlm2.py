"""InternLM2 -> Llama: the config and the keys, fused `wqkv` split.

Facts (InternLM's own `convert2llama` and transformers' InternVL converter
agree): with g = heads / kv_heads and d = head_dim, `attention.wqkv.weight`
([(kv_heads * (g + 2)) * d, hidden]) is `kv_heads` contiguous blocks, each
`[q_0 .. q_{g-1}, k, v]` of d rows. `q_proj` is every block's q heads in
order, `k_proj` / `v_proj` every block's k / v. There is no rotary permutation:
InternLM2 rotates halves exactly as Llama does.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# Per-layer renames inside the LLM's own key space (after `model.layers.N.`).
LAYER_RENAMES = {
    "attention.wo.": "self_attn.o_proj.",
    "feed_forward.w1.": "mlp.gate_proj.",
    "feed_forward.w3.": "mlp.up_proj.",
    "feed_forward.w2.": "mlp.down_proj.",
    "attention_norm.": "input_layernorm.",
    "ffn_norm.": "post_attention_layernorm.",
}
TOP_RENAMES = {
    "model.tok_embeddings.": "model.embed_tokens.",
    "model.norm.": "model.norm.",
    "output.": "lm_head.",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def split_wqkv(
    wqkv: torch.Tensor, heads: int, kv_heads: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v from the fused projection (weight [rows, hidden] or bias [rows])."""
    groups = heads // kv_heads
    blocks = wqkv.reshape(kv_heads, groups + 2, dim, *wqkv.shape[1:])
    q = blocks[:, :groups].reshape(heads * dim, *wqkv.shape[1:])
    k = blocks[:, groups].reshape(kv_heads * dim, *wqkv.shape[1:])
    v = blocks[:, groups + 1].reshape(kv_heads * dim, *wqkv.shape[1:])
    return q, k, v


def llama_key(key: str) -> list[str] | None:
    """The Llama name(s) of an InternLM2 LLM key (`wqkv` -> q, k, v); None drops it
    (rotary caches); KeyError for a key we do not know."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    layer = _LAYER.match(key)
    if layer:
        index, rest = layer.groups()
        prefix = f"model.layers.{index}."
        if rest.startswith("attention.wqkv."):
            leaf = rest.removeprefix("attention.wqkv.")
            return [f"{prefix}self_attn.{p}_proj.{leaf}" for p in "qkv"]
        for old, new in LAYER_RENAMES.items():
            if rest.startswith(old):
                return [prefix + new + rest.removeprefix(old)]
        raise KeyError(key)
    for old, new in TOP_RENAMES.items():
        if key.startswith(old):
            return [new + key.removeprefix(old)]
    raise KeyError(key)


def llama_config(config: dict[str, Any]) -> dict[str, Any]:
    """An InternLM2 config (JSON) as LlamaConfig arguments; `auto_map` and the
    remote-code fields are dropped."""
    rope = config.get("rope_scaling")
    out = {
        "vocab_size": config["vocab_size"],
        "hidden_size": config["hidden_size"],
        "intermediate_size": config["intermediate_size"],
        "num_hidden_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
        "head_dim": head_dim(config),
        "hidden_act": config.get("hidden_act", "silu"),
        "max_position_embeddings": config.get("max_position_embeddings", 2048),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "rope_theta": config.get("rope_theta", 10000.0),
        "attention_bias": bool(config.get("bias", False)),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "bos_token_id": config.get("bos_token_id"),
        "eos_token_id": config.get("eos_token_id"),
        "pad_token_id": config.get("pad_token_id"),
    }
    if rope:
        kind = rope.get("type") or rope.get("rope_type")
        out["rope_scaling"] = {"rope_type": kind, "factor": float(rope["factor"])}
    return out
