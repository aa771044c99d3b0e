"""Which chat template an import writes: the source's own as it is, the format's
default only when the source has none that serves images, `--chat-template` over
either; a template needing a token the tokenizer lacks is refused, naming it,
before a tensor is read. `import.json` says which and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoProcessor

from tests.training.model.import_ import sources
from training.model.import_.formats import ImportFormatError
from training.model.import_.importer import ImportOptions, import_checkpoint, plan_import

# A LLaVA fine-tune on a ChatML LLM: its own template renders image parts; its
# tokenizer ends turns with <|im_end|> and has no </s> (llava-v1's stop token).
CHATML_WITH_IMAGES = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A text-only LLM template (content as a string), as a base LLM's tokenizer ships it.
TEXT_ONLY = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' + message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def with_files(src: Path, out: Path, files: dict[str, str]) -> Path:
    """`src` with some files replaced or added (the rest linked)."""
    out.mkdir()
    for entry in src.iterdir():
        if entry.name not in files:
            (out / entry.name).symlink_to(entry)
    for name, text in files.items():
        (out / name).write_text(text)
    return out


def tokenizer_config(src: Path, template: str | None) -> str:
    config = json.loads((src / "tokenizer_config.json").read_text())
    if template is not None:
        config["chat_template"] = template
    return json.dumps(config)


@pytest.fixture(scope="module")
def chatml_llava(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("chatml-llava")
    tok = sources.tokenizer(["<|im_start|>", "<|im_end|>"], eos="<|im_end|>")
    src = sources.make_llava(base / "src", tok=tok)
    assert "</s>" not in tok.get_vocab()
    (src / "tokenizer_config.json").write_text(tokenizer_config(src, CHATML_WITH_IMAGES))
    (src / "chat_template.jinja").unlink(missing_ok=True)
    return src


def tower(src: Path) -> Path:
    return src.parent / (src.name + "-clip")


def options(**kw) -> ImportOptions:
    return ImportOptions(progress=False, max_shard_bytes=1 << 40, **kw)


def test_the_sources_own_template_is_carried_over_as_it_is(chatml_llava, tmp_path):
    out = tmp_path / "out"
    flags = ["--out", str(out), "--vision-tower", str(tower(chatml_llava)), "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "model", "import", str(chatml_llava), *flags],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "chat template tokenizer_config.json (the source's own)" in done.stdout
    processor = AutoProcessor.from_pretrained(out)
    assert processor.chat_template == CHATML_WITH_IMAGES
    assert processor.tokenizer.chat_template == CHATML_WITH_IMAGES
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}
    ]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\n<image>\nWhich?<|im_end|>\n<|im_start|>assistant\n"
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    record = json.loads((out / "import.json").read_text())["chat_template"]
    assert record == {
        "origin": "source",
        "name": None,
        "file": "tokenizer_config.json",
        "reason": "the source's own",
        "end_of_turn": "<|im_end|>",
    }


def test_a_chat_template_jinja_is_the_sources_too(chatml_llava, tmp_path):
    src = with_files(
        chatml_llava,
        tmp_path / "src",
        {
            "tokenizer_config.json": tokenizer_config(chatml_llava, None).replace(
                '"chat_template"', '"unused"'
            ),
            "chat_template.jinja": CHATML_WITH_IMAGES,
        },
    )
    plan = plan_import(src, options(vision_tower=tower(chatml_llava)))
    assert (plan.template.origin, plan.template.file) == ("source", "chat_template.jinja")
    assert plan.template.text == CHATML_WITH_IMAGES


def test_the_formats_default_only_when_the_source_has_none(imported):
    for fmt, name in (("llava", "llava-v1"), ("xtuner", "internlm2-chatml")):
        record = json.loads((imported[fmt] / "import.json").read_text())["chat_template"]
        assert record["origin"] == "format default" and record["name"] == name
        assert record["reason"] == "the source has no chat template"


def test_a_text_only_source_template_gives_the_default_and_says_why(source_dirs, tmp_path):
    llava = source_dirs["llava"]
    src = with_files(
        llava, tmp_path / "src", {"tokenizer_config.json": tokenizer_config(llava, TEXT_ONLY)}
    )
    plan = plan_import(src, options(vision_tower=tower(llava)))
    assert (plan.template.origin, plan.template.name) == ("format default", "llava-v1")
    assert plan.template.reason.startswith(
        "the source's template (tokenizer_config.json) cannot serve: "
    )


def test_the_option_overrides_the_sources(chatml_llava, tmp_path):
    plan = plan_import(
        chatml_llava,
        options(vision_tower=tower(chatml_llava), chat_template="internlm2-chatml"),
    )
    assert (plan.template.origin, plan.template.name) == ("option", "internlm2-chatml")
    assert plan.template.end_of_turn == "<|im_end|>"
    own = tmp_path / "mine.jinja"
    own.write_text(CHATML_WITH_IMAGES.replace("<|im_start|>", "<|im_start|> "))
    plan = plan_import(
        chatml_llava, options(vision_tower=tower(chatml_llava), chat_template=str(own))
    )
    assert (plan.template.origin, plan.template.file) == ("option", str(own))
    assert plan.template.text == own.read_text()
    with pytest.raises(ImportFormatError, match="unknown chat template 'vicuna'"):
        plan_import(chatml_llava, options(vision_tower=tower(chatml_llava), chat_template="vicuna"))


def test_a_template_needing_a_token_the_tokenizer_lacks_is_refused_naming_it(
    chatml_llava, tmp_path
):
    """Refused in the plan: before a tensor is read or a file written."""
    with pytest.raises(ImportFormatError, match="needs the token </s>, which the tokenizer lacks"):
        plan_import(
            chatml_llava, options(vision_tower=tower(chatml_llava), chat_template="llava-v1")
        )
    eot = CHATML_WITH_IMAGES.replace("<|im_end|>", "<|eot_id|>")
    src = with_files(
        chatml_llava,
        tmp_path / "src",
        {"tokenizer_config.json": tokenizer_config(chatml_llava, eot)},
    )
    with pytest.raises(
        ImportFormatError, match=r"\(tokenizer_config.json\) needs the token <\|eot_id\|>"
    ):
        import_checkpoint(src, tmp_path / "out", options(vision_tower=tower(chatml_llava)))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.importing").exists()
    text_only = tmp_path / "text-only.jinja"
    text_only.write_text(TEXT_ONLY)
    with pytest.raises(ImportFormatError, match="cannot serve: "):
        plan_import(
            chatml_llava,
            options(vision_tower=tower(chatml_llava), chat_template=str(text_only)),
        )
