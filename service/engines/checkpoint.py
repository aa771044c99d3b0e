"""Is a checkpoint directory one our engines serve? Checked before an engine loads.

Both engines load a native Hugging Face LLaVA (`LlavaForConditionalGeneration`)
and never run code shipped in a checkpoint. Anything else (xtuner output, a
remote-code `enhanced_llava`, the original LLaVA layout, any `auto_map`) is
refused with the format's name and the `gmai-vl model import` command that
converts it. Only JSON files and file names are read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REMOTE_CODE_FILES = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
)
ORIGINAL_LLAVA_ARCHS = {"LlavaLlamaForCausalLM", "LlavaMistralForCausalLM"}


class UnservableCheckpoint(ValueError):
    """The checkpoint is not in the native layout; the message says how to convert it."""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def source_format(model_dir: Path) -> tuple[str, bool] | None:
    """None for a native LLaVA; otherwise (what it is, whether `model import` converts it)."""
    config = _json(model_dir / "config.json")
    if (model_dir / "projector" / "config.json").is_file():
        return "xtuner LLaVA output (llm/, visual_encoder/, projector/)", True
    if config is None:
        return "a directory without a readable config.json", False
    kind = config.get("model_type")
    archs = set(config.get("architectures") or ())
    if kind == "enhanced_llava":
        return "enhanced_llava (remote code, InternLM2 text model)", True
    if archs & ORIGINAL_LLAVA_ARCHS or "mm_projector_type" in config:
        return "original LLaVA (LlavaLlamaForCausalLM layout)", True
    for name in REMOTE_CODE_FILES:
        data = _json(model_dir / name) or {}
        if "auto_map" in data or "auto_map" in (data.get("text_config") or {}):
            return f"a remote-code checkpoint (auto_map in {name})", kind == "llava"
    if kind != "llava":
        return f"model_type {str(kind)[:40]!r}, not LLaVA", False
    return None


def check_servable(model_dir: Path) -> None:
    """Raise `UnservableCheckpoint` unless `model_dir` is a native LLaVA checkpoint."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UnservableCheckpoint(f"no checkpoint directory at {model_dir}")
    found = source_format(model_dir)
    if found is None:
        return
    what, convertible = found
    message = (
        f"{model_dir} is {what}: the engines load only the native LLaVA layout "
        "(LlavaForConditionalGeneration) and never run code from a checkpoint."
    )
    if convertible:
        message += (
            f" Convert it once with `gmai-vl model import {model_dir} --out {model_dir}-native`"
            " and serve the new directory (docs/models.md)."
        )
    else:
        message += (
            " `gmai-vl model import` reads xtuner, enhanced_llava and LLaVA (docs/models.md)."
        )
    raise UnservableCheckpoint(message)


def processor_chat_template(model_dir: Path) -> str | None:
    """The chat template a checkpoint keeps beside its processor rather than in its
    tokenizer (llava-hf's `chat_template.json`, or `chat_template.jinja`)."""
    model_dir = Path(model_dir)
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    data = _json(model_dir / "chat_template.json") or {}
    template = data.get("chat_template")
    return template if isinstance(template, str) else None
