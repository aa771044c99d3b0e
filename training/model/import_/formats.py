"""What a source directory is: xtuner output, `enhanced_llava`, original LLaVA.

Detection reads JSON and file names only. `auto` says which format it chose
and why; a directory that is none of them is an error naming what was found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("xtuner", "enhanced-llava", "llava")
ORIGINAL_LLAVA_ARCHS = {"LlavaLlamaForCausalLM", "LlavaMistralForCausalLM"}
ORIGINAL_LLAVA_TYPES = {"llava_llama", "llava_mistral", "llava"}


class ImportFormatError(ValueError):
    """The source cannot be imported; the message says what was found and what to do."""


@dataclass(frozen=True)
class Detected:
    format: str
    reason: str


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"{path} is not readable JSON") from exc


def config_of(directory: Path) -> dict[str, Any] | None:
    path = directory / "config.json"
    return read_json(path) if path.is_file() else None


def is_original_llava(config: dict[str, Any]) -> bool:
    archs = set(config.get("architectures") or ())
    return bool(archs & ORIGINAL_LLAVA_ARCHS) or (
        config.get("model_type") in ORIGINAL_LLAVA_TYPES and "mm_projector_type" in config
    )


def detect(src: Path) -> Detected:
    """The source's format, with the evidence."""
    if not src.is_dir():
        raise ImportFormatError(f"{src} is not a directory")
    config = config_of(src)
    if config is not None and config.get("model_type") == "enhanced_llava":
        return Detected("enhanced-llava", "config.json has model_type enhanced_llava")
    if (src / "projector" / "config.json").is_file():
        return Detected("xtuner", "an xtuner projector/ folder")
    if config is not None and is_original_llava(config):
        return Detected("llava", "config.json is an original LLaVA config (mm_projector_type)")
    raise ImportFormatError(f"{src}: unknown layout; found {describe(src, config)}")


def describe(src: Path, config: dict[str, Any] | None) -> str:
    """What is in `src`, in a few words, for an error message."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir())
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    if config is None:
        return f"no config.json (entries: {shown or 'none'})"
    kind = config.get("model_type", "no model_type")
    archs = ",".join(config.get("architectures") or ()) or "no architectures"
    if kind == "llava" and "LlavaForConditionalGeneration" in archs:
        return f"a native Hugging Face LLaVA ({archs}): it needs no import; serve it directly"
    return f"model_type {kind!r}, architectures {archs} (entries: {shown})"


def check_format(src: Path, fmt: str) -> Detected:
    """`auto` -> detect; a named format -> checked for its one telltale."""
    if fmt == "auto":
        return detect(src)
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}; one of auto, {', '.join(FORMATS)}")
    config = config_of(src)
    ok = {
        "enhanced-llava": config is not None and config.get("model_type") == "enhanced_llava",
        "xtuner": (src / "projector" / "config.json").is_file(),
        "llava": config is not None and is_original_llava(config),
    }[fmt]
    if not ok:
        raise ImportFormatError(f"{src} is not {fmt}: found {describe(src, config)}")
    return Detected(fmt, "given with --format")
