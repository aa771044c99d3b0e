"""Tiny random checkpoints in the source layouts `gmai-vl model import` reads.

Written the way their tools write them (xtuner's `to_xtuner_llava`, an xtuner
`enhanced_llava` HF directory with remote code, LLaVA's `LlavaLlamaForCausalLM`
save), with random weights: key names, shapes and configs are the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast

from training.model.tokenizer import corpus_lines

# InternLM2 with grouped-query attention (g = 2) and a head_dim vLLM's CPU backend has.
INTERNLM2 = {
    "architectures": ["InternLM2ForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_internlm2.InternLM2Config",
        "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
    },
    "model_type": "internlm2",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1000000,
    "rope_scaling": {"type": "dynamic", "factor": 2.0},
    "bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}
INTERNLM2_TOKENIZER_CONFIG = {
    "tokenizer_class": "InternLM2Tokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "</s>",
}
LLAMA = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}


def tokenizer(
    specials: list[str], vocab_size: int = 400, eos: str = "</s>"
) -> PreTrainedTokenizerFast:
    """A byte-level BPE with `<unk> <s> </s>` (or another EOS) first and a BOS-adding
    post-processor, as the sentencepiece tokenizers of InternLM2 and Llama behave."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", eos, *(s for s in specials if s != eos)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token=eos,
        unk_token="<unk>",
        additional_special_tokens=specials,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tok: PreTrainedTokenizerFast, out: Path, remote_class: str | None) -> None:
    tok.save_pretrained(out)
    if remote_class:  # as InternLM2 ships it: a class that only remote code provides
        path = out / "tokenizer_config.json"
        config = json.loads(path.read_text())
        config["tokenizer_class"] = remote_class
        config["auto_map"] = {"AutoTokenizer": [f"tokenization_internlm2.{remote_class}", None]}
        path.write_text(json.dumps(config))


def sentencepiece_model(directory: Path, dummy_prefix: bool) -> Path:
    """A BPE sentencepiece model shaped like InternLM2's: identity normalization, byte
    fallback, ChatML markers as user-defined pieces."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines()))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / "tokenizer"), vocab_size=500,
        model_type="bpe", user_defined_symbols=["<|im_start|>", "<|im_end|>"],
        byte_fallback=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        add_dummy_prefix=dummy_prefix, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    corpus.unlink()
    (directory / "tokenizer.vocab").unlink()
    return directory / "tokenizer.model"


def internlm2_weights(
    config: dict, prefix: str = "", gen=None, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random InternLM2 weights (std 0.05) made where `gen` lives (CPU by default), in
    `dtype`: loadtest/gpu_check.py makes a 7B-shaped set on the GPU in bf16."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    v = config["vocab_size"]
    device = gen.device if gen is not None else None

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype) * 0.05

    w = {f"{prefix}model.tok_embeddings.weight": rand(v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"{prefix}model.layers.{i}."
        w[p + "attention.wqkv.weight"] = rand((heads + 2 * kv) * d, h)
        w[p + "attention.wo.weight"] = rand(h, heads * d)
        w[p + "feed_forward.w1.weight"] = rand(inter, h)
        w[p + "feed_forward.w3.weight"] = rand(inter, h)
        w[p + "feed_forward.w2.weight"] = rand(h, inter)
        w[p + "attention_norm.weight"] = 1 + rand(h)
        w[p + "ffn_norm.weight"] = 1 + rand(h)
    w[f"{prefix}model.norm.weight"] = 1 + rand(h)
    w[f"{prefix}output.weight"] = rand(v, h)
    return w


def llama_weights(config: dict, gen=None) -> dict[str, torch.Tensor]:
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    w = {"model.embed_tokens.weight": rand(config["vocab_size"], h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rand(heads * d, h)
        w[p + "self_attn.k_proj.weight"] = rand(kv * d, h)
        w[p + "self_attn.v_proj.weight"] = rand(kv * d, h)
        w[p + "self_attn.o_proj.weight"] = rand(h, heads * d)
        w[p + "mlp.gate_proj.weight"] = rand(inter, h)
        w[p + "mlp.up_proj.weight"] = rand(inter, h)
        w[p + "mlp.down_proj.weight"] = rand(h, inter)
        w[p + "input_layernorm.weight"] = 1 + rand(h)
        w[p + "post_attention_layernorm.weight"] = 1 + rand(h)
        w[p + "self_attn.rotary_emb.inv_freq"] = rand(d // 2)  # old checkpoints carry it
    w["model.norm.weight"] = 1 + rand(h)
    w["lm_head.weight"] = rand(config["vocab_size"], h)
    return w


def clip_tower(image_size: int, seed: int) -> CLIPVisionModel:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,  # the LLaVA feature layer (-2) is not the last one
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        projection_dim=64,
    )
    return CLIPVisionModel(config).eval()


def projector_weights(
    vision: int, text: int, gen=None, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    device = gen.device if gen is not None else None

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype) * 0.1

    return {
        "model.0.weight": rand(text, vision),
        "model.0.bias": rand(text),
        "model.2.weight": rand(text, text),
        "model.2.bias": rand(text),
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def save_sharded(weights: dict[str, torch.Tensor], out: Path, shards: int) -> None:
    """Sharded safetensors with an index, as save_pretrained writes a large model."""
    keys = sorted(weights)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: weights[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    write_json(out / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})


def make_xtuner(root: Path, image_size: int = 336) -> Path:
    """xtuner's LLaVA output (full fine-tune, ViT trained): LLM + tokenizer at the root,
    `visual_encoder/`, `projector/`; the LLM as `.bin` shards with an index; the
    tokenizer a sentencepiece `tokenizer.model` only."""
    gen = torch.Generator().manual_seed(1)
    # As InternLM2 ships it: a sentencepiece model and remote code, no tokenizer.json.
    sentencepiece_model(root, dummy_prefix=False)
    config = {**INTERNLM2, "vocab_size": 506}  # padded past the 500 pieces, like 92544
    write_json(root / "config.json", config)
    write_json(root / "tokenizer_config.json", INTERNLM2_TOKENIZER_CONFIG)
    weights = internlm2_weights(config, gen=gen)
    keys = sorted(weights)
    index = {}
    for i, chunk in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: weights[k] for k in chunk}, root / name)
        index.update(dict.fromkeys(chunk, name))
    write_json(root / "pytorch_model.bin.index.json", {"metadata": {}, "weight_map": index})
    write_xtuner_vision(root, clip_tower(image_size, seed=2), config["hidden_size"], gen)
    return root


def write_xtuner_vision(root: Path, tower: CLIPVisionModel, llm_hidden: int, gen) -> None:
    """xtuner's `visual_encoder/` (the trained ViT, its preprocessor) and `projector/`
    (its remote-code config, `model.0/2` weights in the tower's dtype, made where `gen` is)."""
    image_size = tower.config.image_size
    tower.save_pretrained(root / "visual_encoder")
    write_json(
        root / "visual_encoder" / "preprocessor_config.json",
        {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": image_size,
         "width": image_size}, "size": {"shortest_edge": image_size},
         "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]},
    )  # fmt: skip
    vision = tower.config.hidden_size
    write_json(
        root / "projector" / "config.json",
        {"architectures": ["ProjectorModel"], "auto_map": {"AutoConfig":
         "configuration_projector.ProjectorConfig"}, "model_type": "projector",
         "visual_hidden_size": vision, "llm_hidden_size": llm_hidden, "depth": 2,
         "hidden_act": "gelu", "bias": True},
    )  # fmt: skip
    weights = projector_weights(vision, llm_hidden, gen, dtype=tower.dtype)
    save_file(weights, str(root / "projector" / "model.safetensors"))


def make_enhanced_llava(root: Path, image_size: int = 56) -> Path:
    """GMAI-VL's training output: one HF directory, `model_type: enhanced_llava`,
    InternLM2 text model, remote code named in `auto_map`; `<image>` in the tokenizer."""
    gen = torch.Generator().manual_seed(3)
    tok = tokenizer(["<|im_start|>", "<|im_end|>", "<image>"])
    text = {**INTERNLM2, "vocab_size": len(tok)}
    root.mkdir(parents=True)
    tower = clip_tower(image_size, seed=4)
    vision = tower.config.to_dict()
    write_json(
        root / "config.json",
        {
            "architectures": ["EnhancedLlavaForConditionalGeneration"],
            "auto_map": {
                "AutoConfig": "configuration_llava.EnhancedLlavaConfig",
                "AutoModel": "modeling_llava.LlavaForConditionalGeneration",
            },
            "model_type": "enhanced_llava",
            "text_config": text,
            "vision_config": vision,
            "image_token_index": tok.convert_tokens_to_ids("<image>"),
            "projector_hidden_act": "gelu",
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "torch_dtype": "float32",
        },
    )
    save_tokenizer(tok, root, "InternLM2Tokenizer")
    weights = internlm2_weights(text, prefix="language_model.", gen=gen)
    weights.update({f"vision_tower.{k}": v for k, v in tower.state_dict().items()})
    proj = projector_weights(64, 128, gen)
    weights.update({k.replace("model.0.", "multi_modal_projector.linear_1.")
                    .replace("model.2.", "multi_modal_projector.linear_2."): v
                    for k, v in proj.items()})  # fmt: skip
    save_sharded(weights, root, shards=3)
    return root


def make_llava(
    root: Path,
    image_size: int = 56,
    kind: str = "mistral",
    tok: PreTrainedTokenizerFast | None = None,
) -> Path:
    """The original LLaVA layout (`LlavaMistralForCausalLM` / `LlavaLlamaForCausalLM`):
    LLM keys unchanged, `model.mm_projector.0/2`, `model.vision_tower.vision_tower.*`;
    the tokenizer (a Llama-like one unless given) has no `<image>` and the vocabulary
    no room for it."""
    gen = torch.Generator().manual_seed(5)
    tok = tok or tokenizer([])
    config = {
        **LLAMA,
        "architectures": [f"Llava{kind.capitalize()}ForCausalLM"],
        "model_type": f"llava_{kind}",
        "vocab_size": len(tok),
        "image_aspect_ratio": "pad",
        "mm_hidden_size": 64,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "use_mm_proj": True,
    }
    root.mkdir(parents=True)
    write_json(root / "config.json", config)
    save_tokenizer(tok, root, None)
    tower = clip_tower(image_size, seed=6)
    weights = llama_weights(config, gen)
    weights.update(
        {f"model.vision_tower.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    )
    weights.update(
        {f"model.mm_projector.{k.removeprefix('model.')}": v
         for k, v in projector_weights(64, 128, gen).items()}
    )  # fmt: skip
    save_sharded(weights, root, shards=2)
    tower.save_pretrained(root.parent / (root.name + "-clip"))  # what --vision-tower names
    return root


# llava-hf/llava-1.5-7b-hf's chat template (its chat_template.json), verbatim.
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def make_llava_hf(root: Path, image_size: int = 56) -> Path:
    """A native Hugging Face LLaVA that is not ours, as llava-hf publishes them (saved by
    transformers 4): `language_model.model.*`, `vision_tower.vision_model.*` keys, the
    chat template only in the processor's `chat_template.json`, `<image>` and `<pad>`
    appended to a Llama tokenizer, a vocabulary padded past them, CLIPImageProcessor."""
    gen = torch.Generator().manual_seed(7)
    tok = tokenizer(["<image>", "<pad>"])
    tok.pad_token = "<pad>"
    vocab = len(tok) + 14  # padded "to 64" as llava-hf's converter does
    text = {**LLAMA, "model_type": "llama", "vocab_size": vocab, "pad_token_id": len(tok) - 1}
    text.pop("torch_dtype")
    tower = clip_tower(image_size, seed=8)
    root.mkdir(parents=True)
    write_json(
        root / "config.json",
        {
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "text_config": text,
            "vision_config": {**tower.config.to_dict(), "model_type": "clip_vision_model"},
            "image_token_index": tok.convert_tokens_to_ids("<image>"),
            "pad_token_id": text["pad_token_id"],
            "projector_hidden_act": "gelu",
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "torch_dtype": "float32",
        },
    )
    write_json(root / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2,
                                                 "pad_token_id": text["pad_token_id"]})  # fmt: skip
    tok.save_pretrained(root)
    for stray in ("chat_template.jinja",):
        (root / stray).unlink(missing_ok=True)
    write_json(root / "chat_template.json", {"chat_template": LLAVA_HF_TEMPLATE})
    write_json(
        root / "preprocessor_config.json",
        {"image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
         "crop_size": {"height": image_size, "width": image_size},
         "size": {"shortest_edge": image_size}, "do_center_crop": True, "do_normalize": True,
         "do_rescale": True, "do_resize": True, "do_convert_rgb": True, "resample": 3,
         "rescale_factor": 1 / 255, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]},
    )  # fmt: skip
    write_json(
        root / "processor_config.json",
        {"processor_class": "LlavaProcessor", "patch_size": 14, "image_token": "<image>",
         "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1},
    )  # fmt: skip
    weights = {f"language_model.{k}": v for k, v in llama_weights(text, gen).items()
               if not k.endswith("inv_freq")}  # fmt: skip
    weights.update({f"vision_tower.vision_model.{k}": v for k, v in tower.state_dict().items()})
    weights.update({k.replace("model.0.", "multi_modal_projector.linear_1.")
                    .replace("model.2.", "multi_modal_projector.linear_2."): v
                    for k, v in projector_weights(64, 128, gen).items()})  # fmt: skip
    save_sharded(weights, root, shards=1)
    return root
