"""The record every converter emits: LLaVA/ShareGPT JSON with a traceable id.

    {"id": "2d#cls#histopathology#crc100k#images#NORM#x.png#caption",
     "image": "images/NORM/x.png", "width": 224, "height": 224,
     "conversations": [{"from": "human", "value": "<image>\\n..."},
                       {"from": "gpt", "value": "..."}],
     "task": "caption", "question_type": "caption", "modality": "histopathology",
     "source": "crc100k", "lang": "en"}

`image` is relative to the source's image folder (the mixture file's
`image_dir`). `task` is the paper's family (caption, perception, vqa);
`question_type` says what was asked, so held-out scoring can break results down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

IMAGE_PLACEHOLDER = "<image>"
TASKS = ("caption", "perception", "vqa")


@dataclass(frozen=True)
class Record:
    id: str
    image: str
    width: int
    height: int
    question: str
    answer: str
    task: str
    question_type: str
    modality: str
    source: str
    lang: str

    def to_json(self) -> dict[str, Any]:
        """The LLaVA JSON form (conversations with `from: human|gpt`) plus our tags."""
        data = asdict(self)
        question, answer = data.pop("question"), data.pop("answer")
        head = {k: data.pop(k) for k in ("id", "image", "width", "height")}
        return {
            **head,
            "conversations": [
                {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
                {"from": "gpt", "value": answer},
            ],
            **data,
        }


def record_id(dim: str, kind: str, modality: str, source: str, image: str, variant: str) -> str:
    """`2d#cls#histopathology#crc100k#images#NORM#x.png#caption`: where a record came from."""
    parts = PurePosixPath(image).parts
    return "#".join([dim, kind, modality, source, *parts, variant])


@dataclass(frozen=True)
class BadFile:
    """A source file a converter could not use, with a reason free of file contents."""

    source: str
    path: str
    reason: str
