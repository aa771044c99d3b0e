"""Export: transformers reloads it with identical logits; vLLM's key layout; LoRA merged."""

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from training.train.config import LoraSettings, StageConfig
from training.train.export import export_checkpoint, read_metadata
from training.train.stages import apply_lora, set_trainable


def batch(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[Image.new("RGB", (56, 56), (120, 30, 30))], text=text,
                     return_tensors="pt")  # fmt: skip


def logits(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


def perturbed(tiny_checkpoint):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    return model


def test_export_reloads_with_identical_logits_in_the_vllm_layout(tiny_checkpoint, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    model = perturbed(tiny_checkpoint)
    inputs = batch(processor)
    out = export_checkpoint(model, processor, tmp_path / "final", {"stage": 3, "step": 7})
    keys = load_file(out / "model.safetensors").keys()
    vision = [k for k in keys if "vision_tower" in k]
    assert vision and all(k.startswith("model.vision_tower.vision_model.") or
                          k.startswith("vision_tower.vision_model.") for k in vision)  # fmt: skip
    reloaded = LlavaForConditionalGeneration.from_pretrained(out)
    assert torch.equal(logits(model, inputs), logits(reloaded, inputs))
    assert read_metadata(out)["step"] == 7 and read_metadata(out)["chat_template"]
    assert not (tmp_path / "final.tmp").exists()


def test_lora_is_merged_into_the_exported_weights(tiny_checkpoint, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint)
    set_trainable(model, ("projector", "llm"))
    peft_model = apply_lora(model, StageConfig("III", ("projector", "llm"), 1e-4,
                                               lora=LoraSettings(r=4, alpha=8)))  # fmt: skip
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("multi_modal_projector" in n
                                                        for n in trainable)  # fmt: skip
    assert not any("vision_tower" in n for n in trainable)
    with torch.no_grad():  # LoRA's B starts at zero; make the adapter do something
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    inputs = batch(processor)
    expected = logits(peft_model, inputs)
    out = export_checkpoint(peft_model, processor, tmp_path / "final", {})
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    reloaded = LlavaForConditionalGeneration.from_pretrained(out)
    assert torch.allclose(logits(reloaded, inputs), expected, atol=1e-4)
