"""`gmai-vl model import` on tiny random checkpoints of each source format: the
imported model's logits equal an independent forward of the source weights; the
chat template renders the source's format; the files say where they came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tests.training.model.import_ import reference, sources
from tests.training.model.import_.conftest import FORMATS
from training.model.import_.formats import ImportFormatError, detect
from training.model.import_.importer import ImportOptions, import_checkpoint

MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}
]


def sample_image(size=(90, 60)) -> Image.Image:
    image = Image.new("RGB", size, (180, 40, 90))
    for x in range(size[0]):
        image.putpixel((x, (x * 7) % size[1]), (255, 255, 255))
    return image


@pytest.mark.parametrize("fmt", FORMATS)
def test_logits_match_an_independent_forward_of_the_source(fmt, source_dirs, imported):
    processor = AutoProcessor.from_pretrained(imported[fmt])
    model = LlavaForConditionalGeneration.from_pretrained(imported[fmt], dtype=torch.float32)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = processor(images=[sample_image()], text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    image_id = model.config.image_token_index
    expected = reference.reference_logits(
        fmt, source_dirs[fmt], inputs["input_ids"], inputs["pixel_values"], image_id
    )[0]
    logits = logits[:, : expected.shape[-1]]  # an added image-token row has no source
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() < 1e-4


def test_image_features_per_image(imported):
    """CLIP-L/14-336 geometry: 576 features per image (CLS dropped, layer -2)."""
    processor = AutoProcessor.from_pretrained(imported["xtuner"])
    config = json.loads((imported["xtuner"] / "config.json").read_text())
    assert config["vision_feature_layer"] == -2
    assert config["vision_feature_select_strategy"] == "default"
    assert config["image_seq_length"] == 576
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    ids = processor(images=[sample_image()], text=prompt)["input_ids"][0]
    assert ids.count(config["image_token_index"]) == 576


def test_pad_to_square_with_the_mean_colour(imported):
    """Where the source trained on padded squares, a wide image is padded, not cropped."""
    processor = AutoProcessor.from_pretrained(imported["llava"])
    wide = Image.new("RGB", (112, 28), (255, 255, 255))
    pixels = processor.image_processor(wide, return_tensors="pt")["pixel_values"][0]
    assert pixels.shape[-2:] == (56, 56)
    mean = torch.tensor(processor.image_processor.image_mean)
    std = torch.tensor(processor.image_processor.image_std)
    top_row = pixels[:, 0, :].mean(-1) * std + mean  # padding, in [0, 1]
    assert torch.allclose(top_row, torch.floor(mean * 255) / 255, atol=0.02)
    middle = pixels[:, 28, :].mean(-1) * std + mean  # the image itself: white
    assert torch.allclose(middle, torch.ones(3), atol=0.02)


def xtuner_internlm2_chat(turns: list[tuple[str, str | None]], system: str | None) -> str:
    """xtuner's PROMPT_TEMPLATE.internlm2_chat, as its encode_fn joins it."""
    out = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for question, answer in turns:
        out += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        if answer is not None:
            out += answer + "<|im_end|>" + "\n"
    return out


def llava_v1(turns: list[tuple[str, str | None]], system: str) -> str:
    """LLaVA's conv_llava_v1.get_prompt (SeparatorStyle.TWO, sep ' ', sep2 '</s>')."""
    seps = [" ", "</s>"]
    out = system + seps[0]
    messages = [m for turn in turns for m in zip(("USER", "ASSISTANT"), turn, strict=True)]
    for i, (role, message) in enumerate(messages):
        out += f"{role}: {message}{seps[i % 2]}" if message else f"{role}:"
    return out


def chat(turns, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    for i, (question, answer) in enumerate(turns):
        content = [{"type": "text", "text": question}]
        if i == 0:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


TURNS = [("Which modality?", "A chest CT."), ("Any nodule?", None)]


@pytest.mark.parametrize("fmt", ["xtuner", "enhanced-llava"])
def test_chat_template_renders_xtuner_internlm2_chat(fmt, imported):
    processor = AutoProcessor.from_pretrained(imported[fmt])
    rendered = processor.apply_chat_template(chat(TURNS, "Be brief."), add_generation_prompt=True)
    expected_turns = [("<image>\n" + TURNS[0][0], TURNS[0][1]), TURNS[1]]
    assert rendered == xtuner_internlm2_chat(expected_turns, "Be brief.")
    ids = processor.tokenizer(rendered)["input_ids"]
    assert ids[0] == processor.tokenizer.bos_token_id and ids[1] != ids[0]  # one BOS


def test_chat_template_renders_llava_v1(imported):
    processor = AutoProcessor.from_pretrained(imported["llava"])
    rendered = processor.apply_chat_template(chat(TURNS), add_generation_prompt=True)
    system = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions."
    )
    expected_turns = [("<image>\n" + TURNS[0][0], TURNS[0][1]), (TURNS[1][0], None)]
    assert rendered == llava_v1(expected_turns, system)


def llava_mistral_instruct(turns: list[tuple[str, str | None]], system: str) -> str:
    """LLaVA's conv_mistral_instruct.get_prompt (SeparatorStyle.LLAMA_2, sep '', sep2 '</s>')."""
    out = ""
    messages = [m for turn in turns for m in turn]
    for i, message in enumerate(messages):
        if not message:
            continue
        if i == 0 and system:
            message = f"<<SYS>>\n{system}\n<</SYS>>\n\n" + message
        out += f"[INST] {message} [/INST]" if i % 2 == 0 else f" {message} </s>"
    return out


@pytest.mark.parametrize("system", [None, "You are a radiologist."])
def test_chat_template_renders_llava_mistral_instruct(system):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from training.model.import_.chat import chat_template

    template = ImmutableSandboxedEnvironment().from_string(
        chat_template("mistral-instruct", "<image>")
    )
    rendered = template.render(messages=chat(TURNS, system), add_generation_prompt=True)
    expected_turns = [("<image>\n" + TURNS[0][0], TURNS[0][1]), TURNS[1]]
    assert rendered == llava_mistral_instruct(expected_turns, system or "")


def test_stop_tokens_and_no_remote_code(imported, source_dirs):
    for fmt in FORMATS:
        out = imported[fmt]
        generation = json.loads((out / "generation_config.json").read_text())
        tokenizer = AutoProcessor.from_pretrained(out).tokenizer
        end = "<|im_end|>" if fmt != "llava" else "</s>"
        assert generation["eos_token_id"][0] == tokenizer.convert_tokens_to_ids(end)
        for path in out.glob("*.json"):
            assert "auto_map" not in path.read_text(), path
        assert not list(out.glob("*.py"))


def test_image_token_is_the_sources_own_and_vocabulary_grows_only_when_needed(
    imported, source_dirs
):
    records = {
        fmt: json.loads((out / "import.json").read_text())
        for fmt in FORMATS
        for out in [imported[fmt]]
    }
    assert records["enhanced-llava"]["image_token_added"] is False
    source = json.loads((source_dirs["enhanced-llava"] / "config.json").read_text())
    config = json.loads((imported["enhanced-llava"] / "config.json").read_text())
    assert config["image_token_index"] == source["image_token_index"]
    assert config["text_config"]["vocab_size"] == source["text_config"]["vocab_size"]
    # xtuner: added, but InternLM2's padded vocabulary has room: no resize.
    assert records["xtuner"]["image_token_added"] is True
    assert records["xtuner"]["embedding_rows_added"] == 0
    # LLaVA's tokenizer fills its vocabulary: one row added.
    assert records["llava"]["embedding_rows_added"] == 1


def test_import_record(imported, source_dirs):
    record = json.loads((imported["xtuner"] / "import.json").read_text())
    assert record["format"] == "xtuner" and record["mapping_version"] == 1
    assert record["text_model"] == "internlm2" and record["dtype"] == "float32"
    hashed = {Path(p).name for p in record["source_files"]}
    assert {"pytorch_model-00001-of-00002.bin", "model.safetensors", "config.json"} <= hashed
    assert all(len(h) == 64 for h in record["source_files"].values())


def test_sharded_output(imported):
    """max_shard_bytes 1 MiB: several shards and an index, every key in one shard."""
    index = json.loads((imported["xtuner"] / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1
    assert all((imported["xtuner"] / s).is_file() for s in shards)


def test_detection_and_errors(source_dirs, tmp_path):
    assert detect(source_dirs["xtuner"]).format == "xtuner"
    assert detect(source_dirs["enhanced-llava"]).format == "enhanced-llava"
    assert detect(source_dirs["llava"]).format == "llava"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "qwen2_vl"}')
    with pytest.raises(ImportFormatError, match="qwen2_vl"):
        detect(tmp_path / "odd")
    with pytest.raises(ImportFormatError, match="is not xtuner"):
        import_checkpoint(source_dirs["llava"], tmp_path / "x", ImportOptions(format="xtuner"))


def test_cli_says_which_format_it_chose_and_refuses_unknown_layouts(source_dirs, tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "model", "import", *args],
            capture_output=True,
            text=True,
        )

    done = run(
        str(source_dirs["enhanced-llava"]),
        "--out",
        str(tmp_path / "a"),
        "--dtype",
        "bfloat16",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "enhanced-llava" in done.stdout + done.stderr
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    (tmp_path / "empty").mkdir()
    failed = run(str(tmp_path / "empty"), "--out", str(tmp_path / "b"))
    assert failed.returncode == 2 and "unknown layout" in failed.stderr
    assert not (tmp_path / "b").exists()


def test_xtuner_lora_adapter_is_merged(source_dirs, tmp_path):
    """An `llm_adapter/` on a base LLM given with --llm: W + alpha/r * B @ A, merged
    on the fused wqkv before it is split."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "lora"
    base = source_dirs["xtuner"]
    (src / "projector").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (src / "projector" / name).write_bytes((base / "projector" / name).read_bytes())
    (src / "visual_encoder").symlink_to(base / "visual_encoder")
    adapter = src / "llm_adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"r": 4, "lora_alpha": 8, "peft_type": "LORA", "target_modules": ["wqkv"]})
    )
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(4, 128, generator=gen)
    b = torch.randn(256, 4, generator=gen)  # (heads + 2 * kv) * d = 8 * 32 rows
    prefix = "base_model.model.model.layers.0.attention.wqkv"
    save_file(
        {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b},
        str(adapter / "adapter_model.safetensors"),
    )
    out = tmp_path / "merged"
    import_checkpoint(src, out, ImportOptions(llm=base, progress=False))
    merged = load_file(out / "model.safetensors")
    wqkv = reference.read_weights(base)["model.layers.0.attention.wqkv.weight"] + 2.0 * b @ a
    blocks = wqkv.view(2, 4, 32, 128)  # kv_heads, g + 2, d, hidden
    q = blocks[:, :2].reshape(128, 128)
    assert torch.allclose(merged["language_model.model.layers.0.self_attn.q_proj.weight"], q)
    assert torch.allclose(
        merged["language_model.model.layers.0.self_attn.v_proj.weight"],
        blocks[:, 3].reshape(64, 128),
    )
    lone = tmp_path / "no-base"
    with pytest.raises(ImportFormatError, match="--llm"):
        import_checkpoint(src, lone, ImportOptions(progress=False))


def test_missing_vision_tower_is_named(source_dirs, tmp_path):
    src = tmp_path / "frozen-vit"
    src.mkdir()
    for entry in source_dirs["xtuner"].iterdir():
        if entry.name != "visual_encoder":
            (src / entry.name).symlink_to(entry)
    with pytest.raises(ImportFormatError, match="--vision-tower"):
        import_checkpoint(src, tmp_path / "out", ImportOptions(progress=False))
    # --vision-tower as users have it: a whole CLIPModel (openai/clip-vit-large-patch14-336)
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel

    tower = reference.read_weights(source_dirs["xtuner"] / "visual_encoder")
    vision = json.loads((source_dirs["xtuner"] / "visual_encoder" / "config.json").read_text())
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config={"hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
                     projection_dim=16))  # fmt: skip
    clip.vision_model.load_state_dict(
        {k.removeprefix("vision_model."): v for k, v in tower.items()}
    )
    clip.save_pretrained(tmp_path / "clip")
    done = import_checkpoint(
        src, tmp_path / "out", ImportOptions(vision_tower=tmp_path / "clip", progress=False)
    )
    assert done.detected.format == "xtuner"
    out = load_file(tmp_path / "out" / "model.safetensors")
    towers = {k for k in out if k.startswith("vision_tower.")}
    assert len(towers) == len(tower)
    for key, value in tower.items():
        local = key.removeprefix("vision_model.")
        assert torch.equal(out["vision_tower.vision_model." + local], value)


def test_source_builders_are_what_they_claim(source_dirs):
    """The xtuner source's LLM is `.bin` shards; the others are sharded safetensors."""
    assert len(list(source_dirs["xtuner"].glob("pytorch_model-*.bin"))) == 2
    assert len(list(source_dirs["enhanced-llava"].glob("model-*.safetensors"))) == 3
    assert sources.INTERNLM2["num_attention_heads"] // sources.INTERNLM2["num_key_value_heads"] > 1


def test_a_sentencepiece_only_tokenizer_is_converted_and_checked(tmp_path):
    """InternLM2 ships `tokenizer.model` and remote code only: the import converts it
    without that code, reproduces sentencepiece, and refuses when it cannot."""
    import sentencepiece

    from training.model.import_.parts import load_tokenizer

    model = sources.sentencepiece_model(tmp_path / "internlm2", dummy_prefix=False)
    (model.parent / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "InternLM2Tokenizer", "add_bos_token": True, "bos_token": "<s>",
         "eos_token": "</s>", "unk_token": "<unk>",
         "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}}
    ))  # fmt: skip
    tokenizer = load_tokenizer(model.parent)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    text = "Axial CT:  a 12 mm nodule\n\tin the right upper lobe. 胸部"
    assert tokenizer(text)["input_ids"] == [1, *sp.encode(text)]
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    prompt = "<|im_start|>user\nHi<|im_end|>\n"
    assert tokenizer(prompt)["input_ids"] == [1, *sp.encode(prompt)]

    odd = sources.sentencepiece_model(tmp_path / "dummy-prefix", dummy_prefix=True)
    with pytest.raises(ImportFormatError, match="does not reproduce sentencepiece"):
        load_tokenizer(odd.parent)


MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
from training.model.import_.importer import ImportOptions, import_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]),
                  ImportOptions(progress=False, max_shard_bytes=32 << 20))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_shard_by_shard_memory(tmp_path):
    """A 0.33 GB source (4 shards) imports in 32 MiB output shards: peak memory grows
    by well under half the model, so a 7B model is never held twice."""
    text = {**sources.INTERNLM2, "hidden_size": 512, "intermediate_size": 1536,
            "num_hidden_layers": 16, "num_attention_heads": 8, "num_key_value_heads": 2,
            "vocab_size": 32000}  # fmt: skip
    tok = sources.tokenizer(["<|im_start|>", "<|im_end|>", "<image>"])
    src = tmp_path / "src"
    src.mkdir()
    tower = sources.clip_tower(56, seed=4)
    sources.write_json(src / "config.json", {
        "model_type": "enhanced_llava", "text_config": text,
        "vision_config": tower.config.to_dict(), "torch_dtype": "float32",
        "image_token_index": tok.convert_tokens_to_ids("<image>"),
    })  # fmt: skip
    sources.save_tokenizer(tok, src, "InternLM2Tokenizer")
    weights = sources.internlm2_weights(text, prefix="language_model.")
    weights |= {f"vision_tower.{k}": v for k, v in tower.state_dict().items()}
    weights |= {k.replace("model.0.", "multi_modal_projector.linear_1.")
                .replace("model.2.", "multi_modal_projector.linear_2."): v
                for k, v in sources.projector_weights(64, 512).items()}  # fmt: skip
    size = sum(t.numel() * t.element_size() for t in weights.values())
    sources.save_sharded(weights, src, shards=4)
    del weights
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(src), str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    grown = int(done.stdout.strip().splitlines()[-1])
    assert size > 300e6
    assert grown < 0.5 * size, (grown, size)
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) >= 9


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda s: s | {"language_model.model.layers.0.attention.extra.weight": (4,)},
         "no mapping"),
        (lambda s: {k: v for k, v in s.items() if "layers.1.ffn_norm" not in k},
         "missing .*post_attention_layernorm"),
        (lambda s: s | {"language_model.model.layers.0.feed_forward.w1.weight": (3, 128)},
         "shape"),
    ],
)  # fmt: skip
def test_incomplete_or_odd_sources_are_refused(source_dirs, change, error):
    from training.model.import_.importer import convert, plan_import
    from training.model.import_.tensors import FileTensors, MetaTensors, ShapeSink, weight_files

    src = source_dirs["enhanced-llava"]
    real = FileTensors(weight_files(src))
    shapes = {k: tuple(real.get(k).shape) for k in real.names()}
    meta = MetaTensors(change(shapes), torch.float32)
    with pytest.raises(ImportFormatError, match=error):
        plan = plan_import(src, ImportOptions(progress=False), open_tensors=lambda _: meta)
        convert(plan, ShapeSink())


def test_xtuner_llm_in_its_own_folder(source_dirs, imported, tmp_path):
    """`llm/` instead of the root: the same model as the root layout gives."""
    from safetensors.torch import load_file

    base = source_dirs["xtuner"]
    src = tmp_path / "xtuner-llm"
    src.mkdir()
    for name in ("projector", "visual_encoder"):
        (src / name).symlink_to(base / name)
    (src / "llm").mkdir()
    for entry in base.iterdir():
        if entry.is_file():
            (src / "llm" / entry.name).symlink_to(entry)
    out = tmp_path / "out"
    import_checkpoint(src, out, ImportOptions(progress=False, max_shard_bytes=1 << 40))
    got = load_file(out / "model.safetensors")
    index = json.loads((imported["xtuner"] / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        for key, value in load_file(imported["xtuner"] / shard).items():
            assert torch.equal(got[key], value), key


def test_a_native_checkpoint_needs_no_import(tiny_checkpoint, tmp_path):
    with pytest.raises(ImportFormatError, match="needs no import"):
        import_checkpoint(tiny_checkpoint, tmp_path / "out", ImportOptions(progress=False))
