"""A small independent forward of the *source* checkpoints: CLIP features (layer -2,
CLS dropped) -> the source's projector -> the source LLM, InternLM2 attention
computed from the fused `wqkv` as InternLM2's own modeling code does (project,
then view as [kv_heads, g + 2, head_dim] and take q, k, v), never through the
importer's split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(path))
    for path in sorted(directory.glob("*.bin")):
        out.update(torch.load(path, weights_only=True))
    return {k: v.float() for k, v in out.items()}


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate halves (InternLM2 and Llama alike); x is [batch, heads, seq, dim]."""
    d, s = x.shape[-1], x.shape[-2]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    freqs = torch.arange(s, dtype=torch.float32)[:, None] * inv[None]
    emb = torch.cat([freqs, freqs], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def decoder_logits(
    w: dict[str, torch.Tensor], cfg: dict, embeds: torch.Tensor, internlm2: bool
) -> torch.Tensor:
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // heads
    g, eps, theta = heads // kv, cfg["rms_norm_eps"], float(cfg["rope_theta"])
    b, s, _ = embeds.shape
    mask = torch.full((s, s), float("-inf")).triu(1)
    x = embeds
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if internlm2:
            y = rms(x, w[p + "attention_norm.weight"], eps)
            qkv = (y @ w[p + "attention.wqkv.weight"].T).view(b, s, kv, g + 2, d)
            q = qkv[..., :g, :].reshape(b, s, heads, d)
            k, v = qkv[..., -2, :], qkv[..., -1, :]
            wo = w[p + "attention.wo.weight"]
        else:
            y = rms(x, w[p + "input_layernorm.weight"], eps)
            q = (y @ w[p + "self_attn.q_proj.weight"].T).view(b, s, heads, d)
            k = (y @ w[p + "self_attn.k_proj.weight"].T).view(b, s, kv, d)
            v = (y @ w[p + "self_attn.v_proj.weight"].T).view(b, s, kv, d)
            wo = w[p + "self_attn.o_proj.weight"]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = rope(q, theta), rope(k, theta)
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(b, s, heads * d) @ wo.T
        if internlm2:
            y = rms(x, w[p + "ffn_norm.weight"], eps)
            gate, up, down = (w[p + f"feed_forward.{n}.weight"] for n in ("w1", "w3", "w2"))
        else:
            y = rms(x, w[p + "post_attention_layernorm.weight"], eps)
            gate, up, down = (w[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        x = x + (torch.nn.functional.silu(y @ gate.T) * (y @ up.T)) @ down.T
    x = rms(x, w["model.norm.weight"], eps)
    return x @ w["output.weight" if internlm2 else "lm_head.weight"].T


def clip_features(
    tower_weights: dict[str, torch.Tensor], config: dict, pixels: torch.Tensor, layer: int
) -> torch.Tensor:
    tower = CLIPVisionModel(CLIPVisionConfig(**config)).eval()
    tower.load_state_dict({k.removeprefix("vision_model."): v for k, v in tower_weights.items()})
    with torch.no_grad():
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
    return hidden[:, 1:]


def projector(w: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """xtuner/LLaVA's nn.Sequential(Linear, GELU, Linear) with its `model.0` / `model.2` keys."""
    hidden = torch.nn.functional.gelu(features @ w["model.0.weight"].T + w["model.0.bias"])
    return hidden @ w["model.2.weight"].T + w["model.2.bias"]


def source_parts(fmt: str, src: Path) -> tuple[dict, dict, dict, dict, dict, bool]:
    """(LLM weights, LLM config, tower weights, tower config, projector weights, internlm2)."""
    if fmt == "xtuner":
        llm = read_weights(src)
        tower = read_weights(src / "visual_encoder")
        tower_cfg = json.loads((src / "visual_encoder" / "config.json").read_text())
        proj = read_weights(src / "projector")
        return llm, json.loads((src / "config.json").read_text()), tower, tower_cfg, proj, True
    every = read_weights(src)
    config = json.loads((src / "config.json").read_text())
    if fmt == "enhanced-llava":
        llm = {k.removeprefix("language_model."): v for k, v in every.items()
               if k.startswith("language_model.")}  # fmt: skip
        tower = {k.removeprefix("vision_tower."): v for k, v in every.items()
                 if k.startswith("vision_tower.")}  # fmt: skip
        proj = {k.replace("multi_modal_projector.linear_1.", "model.0.")
                .replace("multi_modal_projector.linear_2.", "model.2."): v
                for k, v in every.items() if k.startswith("multi_modal_projector.")}  # fmt: skip
        return llm, config["text_config"], tower, config["vision_config"], proj, True
    llm = {k: v for k, v in every.items()
           if not k.startswith(("model.mm_projector.", "model.vision_tower."))}  # fmt: skip
    tower = {k.removeprefix("model.vision_tower.vision_tower."): v for k, v in every.items()
             if k.startswith("model.vision_tower.")}  # fmt: skip
    proj = {k.replace("model.mm_projector.", "model."): v for k, v in every.items()
            if k.startswith("model.mm_projector.")}  # fmt: skip
    tower_cfg = json.loads((src.parent / (src.name + "-clip") / "config.json").read_text())
    return llm, config, tower, tower_cfg, proj, False


def reference_logits(
    fmt: str, src: Path, input_ids: torch.Tensor, pixels: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """Logits of the source model for a prompt whose image tokens are already expanded."""
    llm, cfg, tower, tower_cfg, proj, internlm2 = source_parts(fmt, src)
    features = projector(proj, clip_features(tower, tower_cfg, pixels, -2))
    embed = llm["model.tok_embeddings.weight" if internlm2 else "model.embed_tokens.weight"]
    is_image = input_ids == image_token_id
    text_ids = input_ids.masked_fill(is_image, 0)
    embeds = embed[text_ids]
    embeds[is_image] = features.reshape(-1, features.shape[-1])
    return decoder_logits(llm, cfg, embeds, internlm2)
