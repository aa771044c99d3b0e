"""A 7B-shaped GMAI-VL (InternLM2.5-7B + CLIP ViT-L/14-336, enhanced_llava) imported
on the meta device: key names and shapes only, no weights in memory. The result's
config loads in transformers and in vLLM's config parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from tests.training.model.import_.sources import save_tokenizer, tokenizer, write_json
from training.model.import_.importer import ImportOptions, convert, plan_import, write_extras
from training.model.import_.sources import CLIP_L_336
from training.model.import_.tensors import MetaTensors, ShapeSink

# InternLM2.5-7B: 32 heads, 8 KV heads, head_dim 128, hidden 4096, intermediate 14336.
INTERNLM2_5_7B = {
    "architectures": ["InternLM2ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"},
    "model_type": "internlm2",
    "vocab_size": 92544,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1000000,
    "rope_scaling": {"type": "dynamic", "factor": 2.0},
    "bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "torch_dtype": "bfloat16",
}


def source_shapes() -> dict[str, tuple[int, ...]]:
    """The source's keys and shapes, written out here from InternLM2's and CLIP's modules."""
    c, v = INTERNLM2_5_7B, CLIP_L_336
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    d = h // c["num_attention_heads"]
    fused = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * d
    s: dict[str, tuple[int, ...]] = {
        "language_model.model.tok_embeddings.weight": (vocab, h),
        "language_model.model.norm.weight": (h,),
        "language_model.output.weight": (vocab, h),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        s |= {
            p + "attention.wqkv.weight": (fused, h),
            p + "attention.wo.weight": (h, h),
            p + "feed_forward.w1.weight": (inter, h),
            p + "feed_forward.w3.weight": (inter, h),
            p + "feed_forward.w2.weight": (h, inter),
            p + "attention_norm.weight": (h,),
            p + "ffn_norm.weight": (h,),
        }
    vh, vi, patches = v["hidden_size"], v["intermediate_size"], (336 // 14) ** 2
    t = "vision_tower.vision_model."
    s |= {
        t + "embeddings.class_embedding": (vh,),
        t + "embeddings.patch_embedding.weight": (vh, 3, 14, 14),
        t + "embeddings.position_embedding.weight": (patches + 1, vh),
        t + "pre_layrnorm.weight": (vh,),
        t + "pre_layrnorm.bias": (vh,),
        t + "post_layernorm.weight": (vh,),
        t + "post_layernorm.bias": (vh,),
    }
    for i in range(v["num_hidden_layers"]):
        p = f"{t}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s |= {p + f"self_attn.{proj}.weight": (vh, vh), p + f"self_attn.{proj}.bias": (vh,)}
        s |= {
            p + "mlp.fc1.weight": (vi, vh),
            p + "mlp.fc1.bias": (vi,),
            p + "mlp.fc2.weight": (vh, vi),
            p + "mlp.fc2.bias": (vh,),
        }
        for norm in ("layer_norm1", "layer_norm2"):
            s |= {p + f"{norm}.weight": (vh,), p + f"{norm}.bias": (vh,)}
    s |= {
        "multi_modal_projector.linear_1.weight": (h, vh),
        "multi_modal_projector.linear_1.bias": (h,),
        "multi_modal_projector.linear_2.weight": (h, h),
        "multi_modal_projector.linear_2.bias": (h,),
    }
    return s


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gmai-vl-7b")
    tok = tokenizer(["<|im_start|>", "<|im_end|>", "<image>"])
    write_json(
        root / "config.json",
        {
            "architectures": ["EnhancedLlavaForConditionalGeneration"],
            "auto_map": {"AutoConfig": "configuration_llava.EnhancedLlavaConfig"},
            "model_type": "enhanced_llava",
            "text_config": INTERNLM2_5_7B,
            "vision_config": CLIP_L_336,
            "image_token_index": tok.convert_tokens_to_ids("<image>"),
            "vision_feature_layer": -2,
            "torch_dtype": "bfloat16",
        },
    )
    save_tokenizer(tok, root, "InternLM2Tokenizer")
    return root


def test_7b_imports_on_the_meta_device(source, tmp_path):
    def open_meta(directory: Path) -> MetaTensors:
        return MetaTensors(source_shapes(), torch.bfloat16)

    plan = plan_import(source, ImportOptions(progress=False), open_tensors=open_meta)
    sink = ShapeSink()
    convert(plan, sink)
    assert sink.shapes == plan.expected  # every native key, each with its model's shape
    layer = "language_model.model.layers.31."
    assert sink.shapes[layer + "self_attn.q_proj.weight"] == (4096, 4096)
    assert sink.shapes[layer + "self_attn.k_proj.weight"] == (1024, 4096)
    assert sink.shapes[layer + "self_attn.v_proj.weight"] == (1024, 4096)
    assert sink.shapes[layer + "mlp.gate_proj.weight"] == (14336, 4096)
    assert sink.shapes["language_model.model.embed_tokens.weight"] == (92544, 4096)
    assert sink.shapes["multi_modal_projector.linear_1.weight"] == (4096, 1024)
    assert set(sink.dtypes.values()) == {torch.bfloat16}
    params = sum(torch.Size(s).numel() for s in sink.shapes.values())
    assert 7.9e9 < params < 8.2e9  # InternLM2.5-7B (7.74B) + CLIP-L (0.30B) + projector

    out = tmp_path / "native"
    out.mkdir()
    write_extras(plan, out)
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "llava" and config.text_config.model_type == "llama"
    assert config.text_config.num_key_value_heads == 8 and config.text_config.head_dim == 128
    assert config.text_config.rope_parameters["rope_type"] == "dynamic"
    assert config.text_config.rope_parameters["rope_theta"] == 1000000
    assert config.image_seq_length == 576 and config.vision_feature_layer == -2
    raw = json.loads((out / "config.json").read_text())
    assert "auto_map" not in raw and "auto_map" not in raw["text_config"]

    from vllm.transformers_utils.config import get_config

    parsed = get_config(out, trust_remote_code=False)
    assert parsed.architectures == ["LlavaForConditionalGeneration"]
    assert parsed.text_config.hidden_size == 4096
