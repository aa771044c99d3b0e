"""Assemble a LLaVA checkpoint (CLIP vision tower + MLP projector + Llama LM) from a preset.

The checkpoint is written in the Hugging Face LLaVA layout that both
transformers and vLLM load without remote code. One detail matters: transformers
5.x saves the CLIP tower as `vision_tower.*`, while vLLM's LLaVA loader expects
`vision_tower.vision_model.*`. We write the latter; transformers loads it too.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from training.model.presets import ModelPreset
from training.model.tokenizer import IMAGE_TOKEN, train_bpe_tokenizer

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "gmaivl.json"
# CLIP's normalisation constants, as in openai/clip-vit-*.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_config(
    preset: ModelPreset, vocab_size: int, image_token_id: int, pad_id: int, eos_id: int
) -> LlavaConfig:
    v, t = preset.vision, preset.text
    vision = CLIPVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
        projection_dim=v.hidden_size,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=t.head_dim,
        max_position_embeddings=t.max_position_embeddings,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=preset.image_tokens,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def build_processor(preset: ModelPreset, tokenizer) -> LlavaProcessor:
    size = preset.vision.image_size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=preset.vision.patch_size,
        vision_feature_select_strategy="default",
        chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )


def to_vllm_layout(checkpoint: Path) -> None:
    """Rename `vision_tower.X` to `vision_tower.vision_model.X` in place (see module doc),
    in every weights file of `checkpoint` and in the shard index when there is one."""

    def rename(key: str) -> str:
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            return "vision_tower.vision_model." + key.removeprefix("vision_tower.")
        return key

    for weights in sorted(checkpoint.glob("*.safetensors")):
        state = load_file(weights)
        save_file({rename(k): v for k, v in state.items()}, weights, metadata={"format": "pt"})
    index = checkpoint / (WEIGHTS_FILE + ".index.json")
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2) + "\n")


def assemble_checkpoint(preset: ModelPreset, out: Path, seed: int = 0) -> Path:
    """Write an untrained LLaVA checkpoint for `preset` to `out`; same seed, same bytes."""
    torch.manual_seed(seed)
    tokenizer = train_bpe_tokenizer(preset.vocab_size)
    vocab_size = len(tokenizer)
    config = build_config(
        preset,
        vocab_size=vocab_size,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    to_vllm_layout(out)
    processor = build_processor(preset, tokenizer)
    processor.save_pretrained(out)
    metadata = {
        "preset": asdict(preset),
        "seed": seed,
        "stage": "assembled",
        "trained": False,
        "step": 0,
        "chat_template": tokenizer.chat_template,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out
