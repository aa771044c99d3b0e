"""Score a checkpoint on a held-out LLaVA JSON split: greedy answers, accuracy per question type.

Scoring is by meaning, not exact text, with the eval harness's rules
(training/eval/scoring.py), so any template's wording counts:
- modality: the expected modality's name is in the answer and no other one is;
- presence: the answer starts with the expected yes or no;
- location: the expected quadrant(s) are named and no other quadrant is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from training.data.facts import QUADRANTS
from training.data.mixture import read_annotations
from training.data.templates import MODALITY_NAMES
from training.eval.scoring import leading_yes_no, same_names
from training.train.dataset import to_messages

SCORED_TYPES = ("modality", "presence", "location")


def is_correct(question_type: str, expected: str, predicted: str) -> bool:
    if question_type == "modality":
        return same_names(predicted, expected, (n["en"] for n in MODALITY_NAMES.values()))
    if question_type == "presence":
        return leading_yes_no(predicted, expected)
    if question_type == "location":
        return same_names(predicted, expected, QUADRANTS)
    raise ValueError(f"no scoring rule for question type {question_type!r}")


@dataclass(frozen=True)
class Scored:
    id: str
    question_type: str
    question: str
    expected: str
    predicted: str
    correct: bool


def generate_answers(
    checkpoint: Path,
    prompts: list[tuple[Path, list[dict[str, Any]]]],
    batch_size: int = 32,
    max_new_tokens: int = 24,
    progress: bool = True,
) -> list[str]:
    """Greedy answers of the exported checkpoint (transformers generate), batched."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.tokenizer.padding_side = "left"  # generation continues every row at its end
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint).eval()
    answers = []
    bar = tqdm(total=len(prompts), desc="held-out answers", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        texts = [processor.apply_chat_template(m, add_generation_prompt=True) for _, m in chunk]
        images = []
        for path, _ in chunk:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        inputs = processor(images=images, text=texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        bar.update(len(chunk))
    bar.close()
    return [a.strip() for a in answers]


def evaluate_heldout(
    checkpoint: Path, annotations: Path, progress: bool = True, limit: int | None = None
) -> tuple[dict[str, float], list[Scored]]:
    """Accuracy per question type (and n) of `checkpoint` on a held-out annotations file."""
    records = [r for r in read_annotations(annotations) if r["question_type"] in SCORED_TYPES]
    records = records[:limit] if limit else records
    prompts = [
        (annotations.parent / r["image"], to_messages(r["conversations"][:1])) for r in records
    ]
    answers = generate_answers(checkpoint, prompts, progress=progress)
    scored = [
        Scored(
            r["id"],
            r["question_type"],
            r["conversations"][0]["value"],
            r["conversations"][1]["value"],
            answer,
            is_correct(r["question_type"], r["conversations"][1]["value"], answer),
        )
        for r, answer in zip(records, answers, strict=True)
    ]
    summary: dict[str, float] = {}
    for qtype in SCORED_TYPES:
        rows = [s for s in scored if s.question_type == qtype]
        if rows:
            summary[qtype] = sum(s.correct for s in rows) / len(rows)
            summary[f"{qtype}_n"] = len(rows)
    return summary, scored


def write_scores(summary: dict[str, float], scored: list[Scored], out: Path) -> None:
    out.write_text(
        json.dumps({"accuracy": summary, "answers": [s.__dict__ for s in scored]}, indent=1)
    )


def format_summary(summary: dict[str, float]) -> str:
    return "  ".join(
        f"{t}: {summary[t]:.3f} (n={int(summary[t + '_n'])})" for t in SCORED_TYPES if t in summary
    )
