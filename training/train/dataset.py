"""Training examples from a mixture file (GMAI-VL `example_list.json`) or a LLaVA JSON list.

An example is an image path and the conversation in the chat template's message
shape: the `<image>` placeholder of a human turn becomes an image content part
in front of its text, as the OpenAI-style requests the service receives have it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from training.data.mixture import read_annotations, read_mixture
from training.data.records import IMAGE_PLACEHOLDER

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


@dataclass(frozen=True)
class Example:
    image: Path | None
    messages: list[dict[str, Any]]


def to_messages(conversations: list[dict[str, str]]) -> list[dict[str, Any]]:
    messages = []
    for turn in conversations:
        role, text = ROLES[turn["from"]], turn["value"]
        if role == "user" and IMAGE_PLACEHOLDER in text:
            rest = text.replace(IMAGE_PLACEHOLDER, "").strip()
            content: Any = [{"type": "image"}, {"type": "text", "text": rest}]
        else:
            content = text
        messages.append({"role": role, "content": content})
    return messages


def is_mixture(path: Path) -> bool:
    if Path(path).suffix != ".json":
        return False
    head = Path(path).read_text(encoding="utf-8").lstrip()[:1]
    return head == "{"


def load_examples(path: Path, image_root: Path | None = None, seed: int = 0) -> list[Example]:
    """Examples from a mixture (sample_ratio applied, seeded) or a LLaVA JSON/JSONL list."""
    path = Path(path)
    if is_mixture(path):
        rng = random.Random(seed)
        examples: list[Example] = []
        for entry in read_mixture(path).values():
            records = [r for shard in entry["annotations"] for r in read_annotations(Path(shard))]
            chosen = _sample(records, float(entry["sample_ratio"]), rng)
            examples += [_example(r, Path(entry["image_dir"])) for r in chosen]
        return examples
    root = Path(image_root) if image_root else path.parent
    return [_example(r, root) for r in read_annotations(path)]


def _sample(records: list[dict], ratio: float, rng: random.Random) -> list[dict]:
    """Each record `int(ratio)` times, plus a random share for the fraction."""
    whole, fraction = int(ratio), ratio - int(ratio)
    return records * whole + rng.sample(records, round(len(records) * fraction))


def _example(record: dict[str, Any], image_dir: Path) -> Example:
    image = image_dir / record["image"] if record.get("image") else None
    return Example(image, to_messages(record["conversations"]))


class LlavaDataset(Dataset):
    """Loads the image of an example when it is asked for (RGB, as the service sends it)."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        image = None
        if example.image is not None:
            with Image.open(example.image) as im:
                image = im.convert("RGB")
        return {"image": image, "messages": example.messages}


def describe(examples: list[Example]) -> str:
    with_images = sum(1 for e in examples if e.image is not None)
    return json.dumps({"examples": len(examples), "with_images": with_images})
