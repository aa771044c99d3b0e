"""`gmai-vl model init --vision-tower --llm`: a LLaVA from pretrained local parts
(here tiny ones the test builds: a CLIPModel and a Llama with its own tokenizer)."""

import json
import subprocess
import sys

import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)


def make_parts(root):
    clip = CLIPModel(CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 99},
        projection_dim=16,
    ))  # fmt: skip
    clip.save_pretrained(root / "clip")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        ["a chest x-ray with a nodule", "no lesion is visible"] * 10,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=32, eos_token_id=1,
        tie_word_embeddings=False,
    ))  # fmt: skip
    llama.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return clip, llama, len(tokenizer)


def test_model_init_from_pretrained_parts(tmp_path):
    clip, llama, vocab = make_parts(tmp_path)
    out = tmp_path / "llava"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "model", "init", "--vision-tower",
         str(tmp_path / "clip"), "--llm", str(tmp_path / "llm"), "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    weights = load_file(out / "model.safetensors")
    assert any(k.startswith("vision_tower.vision_model.") or
               k.startswith("model.vision_tower.vision_model.") for k in weights)  # fmt: skip
    model = LlavaForConditionalGeneration.from_pretrained(out)
    tower = model.model.vision_tower.state_dict()
    for name, value in clip.vision_model.state_dict().items():
        assert torch.equal(tower[name], value)
    lm_state = model.model.language_model.state_dict()
    for name, value in llama.model.state_dict().items():
        if name == "embed_tokens.weight":  # grown by the added tokens
            assert torch.equal(lm_state[name][:vocab], value)
        else:
            assert torch.equal(lm_state[name], value)
    assert torch.equal(model.lm_head.weight[:vocab], llama.lm_head.weight)

    processor = AutoProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == vocab + 4  # <|im_start|>, <|im_end|>, <image>, pad
    assert model.config.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_seq_length == 4 and model.config.vision_feature_layer == -2
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>user\n<image>\nHi<|im_end|>")
    inputs = processor(images=[Image.new("RGB", (40, 40))], text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    meta = json.loads((out / "gmaivl.json").read_text())
    assert meta["trained"] is False and meta["llm"] == str((tmp_path / "llm").resolve())


def test_model_init_needs_both_parts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "model", "init", "--llm", str(tmp_path),
         "--out", str(tmp_path / "x")], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "go together" in result.stderr
