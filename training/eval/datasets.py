"""Benchmark files in their published local layouts -> `EvalItem`s.

- Multiple choice, VLMEvalKit TSV (OmniMedVQA, GMAI-MMBench, PMC-VQA, MMMU-style):
  columns `index`, `question`, option columns `A`..`Z` (empty = absent), `answer`
  (a letter), `image` (base64; a short number instead refers to the row with
  that `index`, as VLMEvalKit stores repeated images) or `image_path`, optional
  `hint`; every other column (category, l2-category, modality, ...) becomes a tag.
- Closed/open VQA JSON lists:
  VQA-RAD (`qid`, `image_name`, `question`, `answer`, `answer_type` OPEN/CLOSED,
  `question_type`, `image_organ`); SLAKE (`qid`, `img_name`, `question`,
  `answer`, `answer_type`, `q_lang`, `modality`, `content_type`, `location`);
  PathVQA-style (`image`, `question`, `answer`, optional `answer_type`; yes/no
  answers are closed, as in the PathVQA paper).
Images named by path are looked up under the image root (default: the file's
folder, and its `images/`, `imgs/`, `VQA_RAD Image Folder/` subfolders).
"""

from __future__ import annotations

import base64
import csv
import json
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["mcq", "closed", "open"]
IMAGE_SUBDIRS = ("", "images", "imgs", "VQA_RAD Image Folder")
MCQ_CORE = {"index", "question", "answer", "image", "image_path", "hint"}


@dataclass(frozen=True)
class EvalItem:
    key: str  # unique within the benchmark; the resume cache is keyed by it
    kind: Kind
    question: str
    answer: str  # a letter for mcq, the reference text otherwise
    image: bytes | None
    options: dict[str, str] = field(default_factory=dict)  # letter -> text (mcq)
    hint: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # breakdown fields


class BenchmarkFormatError(ValueError):
    """The file is not in any layout we read; the message says what was expected."""


def load_benchmark(path: Path, image_root: Path | None = None) -> list[EvalItem]:
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    if path.suffix.lower() == ".tsv":
        return load_mcq_tsv(path, root)
    if path.suffix.lower() == ".json":
        return load_vqa_json(path, root)
    raise BenchmarkFormatError(f"{path.name}: expected a VLMEvalKit .tsv or a VQA .json file")


def load_mcq_tsv(path: Path, image_root: Path) -> list[EvalItem]:
    csv.field_size_limit(sys.maxsize)  # base64 images make long fields
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"index", "question", "answer"} <= set(rows[0]):
        raise BenchmarkFormatError(f"{path.name}: a TSV needs index, question and answer columns")
    images = {row["index"]: row.get("image", "") for row in rows}
    items = []
    for row in rows:
        options = {
            letter: row[letter].strip()
            for letter in string.ascii_uppercase
            if _present(row.get(letter))
        }
        tags = {
            k: v.strip()
            for k, v in row.items()
            if k not in MCQ_CORE
            and k not in options
            and k not in string.ascii_uppercase
            and _present(v)
        }
        items.append(
            EvalItem(
                key=str(row["index"]),
                kind="mcq",
                question=row["question"].strip(),
                answer=row["answer"].strip().upper(),
                image=_tsv_image(row, images, image_root),
                options=options,
                hint=row["hint"].strip() if _present(row.get("hint")) else None,
                tags=tags,
            )
        )
    return items


def _present(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "nan", "NaN", "None")


def _tsv_image(row: dict[str, str], images: dict[str, str], root: Path) -> bytes | None:
    if _present(row.get("image_path")):
        return _read_image(root, row["image_path"].strip())
    value = (row.get("image") or "").strip()
    if value.isdigit() and len(value) < 64:  # VLMEvalKit: "same image as row <index>"
        value = images.get(value, "").strip()
    return base64.b64decode(value) if value else None


def _read_image(root: Path, name: str) -> bytes:
    for sub in IMAGE_SUBDIRS:
        candidate = root / sub / name
        if candidate.is_file():
            return candidate.read_bytes()
    raise BenchmarkFormatError(f"image {name!r} not found under {root}")


def load_vqa_json(path: Path, image_root: Path) -> list[EvalItem]:
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records:
        raise BenchmarkFormatError(f"{path.name}: expected a non-empty JSON list of questions")
    first = records[0]
    if "image_name" in first:
        convert = _vqa_rad
    elif "img_name" in first:
        convert = _slake
    elif "image" in first and "answer" in first:
        convert = _pathvqa
    else:
        raise BenchmarkFormatError(
            f"{path.name}: records need image_name (VQA-RAD), img_name (SLAKE) or image (PathVQA)"
        )
    return [convert(i, r, image_root) for i, r in enumerate(records)]


def _closed_or_open(answer_type: Any, answer: str) -> Kind:
    if isinstance(answer_type, str) and answer_type.strip().upper() in ("CLOSED", "OPEN"):
        return "closed" if answer_type.strip().upper() == "CLOSED" else "open"
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


def _vqa_rad(i: int, r: dict[str, Any], root: Path) -> EvalItem:
    answer = str(r["answer"])
    kind = _closed_or_open(r.get("answer_type"), answer)
    tags = {
        "answer_type": kind,
        "question_type": str(r.get("question_type", "")).strip(),
        "organ": str(r.get("image_organ", "")).strip(),
    }
    return EvalItem(
        str(r.get("qid", i)),
        kind,
        str(r["question"]),
        answer,
        _read_image(root, r["image_name"]),
        tags=_nonempty(tags),
    )


def _slake(i: int, r: dict[str, Any], root: Path) -> EvalItem:
    answer = str(r["answer"])
    kind = _closed_or_open(r.get("answer_type"), answer)
    tags = {
        "answer_type": kind,
        "modality": str(r.get("modality", "")),
        "question_type": str(r.get("content_type", "")),
        "language": str(r.get("q_lang", "")),
        "location": str(r.get("location", "")),
    }
    return EvalItem(
        str(r.get("qid", i)),
        kind,
        str(r["question"]),
        answer,
        _read_image(root, r["img_name"]),
        tags=_nonempty(tags),
    )


def _pathvqa(i: int, r: dict[str, Any], root: Path) -> EvalItem:
    answer = str(r["answer"])
    kind = _closed_or_open(r.get("answer_type"), answer)
    return EvalItem(
        str(r.get("id", r.get("qid", i))),
        kind,
        str(r["question"]),
        answer,
        _read_image(root, r["image"]),
        tags={"answer_type": kind},
    )


def _nonempty(tags: dict[str, str]) -> dict[str, str]:
    return {k: v.strip() for k, v in tags.items() if v and v.strip()}
