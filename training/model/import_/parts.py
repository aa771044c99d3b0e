"""What serving needs beside the weights: tokenizer, processor, generation config.

The tokenizer is read from `tokenizer.json` (or a sentencepiece `tokenizer.model`)
with transformers' own classes, never a class named by the checkpoint, and
saved without `auto_map`. The image token is the source's own when its
tokenizer has one; otherwise `<image>` is added (the vocabulary grows only when
the new id does not fit the model's embedding rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import LlavaProcessor, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from training.model.import_.formats import ImportFormatError, read_json

IMAGE_TOKEN = "<image>"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    if (directory / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(directory)
    if (directory / "tokenizer.model").is_file():
        from training.model.import_.spm import from_sentencepiece

        config_path = directory / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        return from_sentencepiece(directory / "tokenizer.model", config)
    raise ImportFormatError(f"no tokenizer (tokenizer.json or tokenizer.model) in {directory}")


def image_token_of(tokenizer: PreTrainedTokenizerBase, token_id: int | None) -> tuple[str, bool]:
    """(the image token, whether it had to be added)."""
    if token_id is not None and 0 <= token_id < len(tokenizer):
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token is not None:
            return token, False
    if IMAGE_TOKEN in tokenizer.get_vocab():
        return IMAGE_TOKEN, False
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return IMAGE_TOKEN, True


def image_processor(
    preprocessor: dict[str, Any] | None, image_size: int, pad_to_square: bool
) -> LlavaImageProcessorPil:
    """CLIP preprocessing at the tower's size; pad-to-square with the mean colour
    where the source trained that way (LLaVA's `image_aspect_ratio: pad`)."""
    pre = preprocessor or {}
    return LlavaImageProcessorPil(
        do_pad=pad_to_square,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=pre.get("image_mean", CLIP_MEAN),
        image_std=pre.get("image_std", CLIP_STD),
    )


def find_preprocessor(directories: list[Path | None]) -> dict[str, Any] | None:
    for directory in directories:
        if directory is not None and (directory / "preprocessor_config.json").is_file():
            return read_json(directory / "preprocessor_config.json")
    return None


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    images: LlavaImageProcessorPil,
    patch_size: int,
    strategy: str,
    template: str,
    image_token: str,
) -> LlavaProcessor:
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=template,
        image_token=image_token,
        num_additional_image_tokens=1,  # CLIP's CLS token
    )


def strip_remote_code(out: Path) -> None:
    """No `auto_map` in anything we write: nothing in the import names code to run."""
    for name in ("tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        path = out / name
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("auto_map", None)
            if data.get("tokenizer_class", "").startswith("InternLM"):
                data["tokenizer_class"] = "PreTrainedTokenizerFast"
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
