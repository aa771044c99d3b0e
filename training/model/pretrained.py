"""Assemble a LLaVA from pretrained local parts: `gmai-vl model init --vision-tower --llm`.

The real recipe's starting point: a CLIP vision tower (e.g. CLIP ViT-L/14-336, a
`CLIPModel` or `CLIPVisionModel` folder) and a causal LM (e.g. a 7B Llama-family
model) that the user has on disk, joined by a fresh two-layer MLP projector.
The LM's tokenizer is kept and given what the service needs: our ChatML chat
template, its `<|im_start|>`/`<|im_end|>` markers, the `<image>` token and a
pad token (embeddings grow for the tokens it lacked). Like LLaVA-1.5, the
projector reads the vision tower's penultimate layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from training.model.assemble import CLIP_MEAN, CLIP_STD, METADATA_FILE, to_vllm_layout
from training.model.tokenizer import CHAT_TEMPLATE, IM_END, IM_START, IMAGE_TOKEN, PAD_TOKEN


def prepare_tokenizer(llm: Path) -> Any:
    """The LM's tokenizer with our chat template, ChatML markers, image and pad tokens."""
    tokenizer = AutoTokenizer.from_pretrained(llm)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END, IMAGE_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def image_processor_for(vision_tower: Path, image_size: int) -> Any:
    if (vision_tower / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(vision_tower)
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def assemble_from_pretrained(vision_tower: Path, llm: Path, out: Path, seed: int = 0) -> Path:
    """Write a LLaVA checkpoint made of the two pretrained parts and a fresh projector."""
    torch.manual_seed(seed)  # the projector's initial weights
    vision_config = CLIPVisionConfig.from_pretrained(vision_tower)
    vision = CLIPVisionModel.from_pretrained(vision_tower, dtype=torch.float32)
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32)
    tokenizer = prepare_tokenizer(llm)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=lm.config,
        image_token_index=image_token_id,
        image_seq_length=patches,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.base_model.state_dict())
    model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    model.resize_token_embeddings(len(tokenizer))
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    lm_eos = lm.generation_config.eos_token_id
    lm_eos = lm_eos if isinstance(lm_eos, list) else [lm_eos]
    model.generation_config.eos_token_id = [end_of_turn, *[e for e in lm_eos if e is not None]]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.eos_token = IM_END  # the end of an assistant turn, as the collator masks it

    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    to_vllm_layout(out)
    processor = LlavaProcessor(
        image_processor=image_processor_for(Path(vision_tower), vision_config.image_size),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(out)
    metadata = {
        "preset": None,
        "vision_tower": str(Path(vision_tower).resolve()),
        "llm": str(Path(llm).resolve()),
        "seed": seed,
        "stage": "assembled",
        "trained": False,
        "step": 0,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out
