"""Answer extraction and scoring, following VLMEvalKit and LLaVA-Med so numbers compare.

Multiple choice (VLMEvalKit's exact-matching path, without its LLM judge):
1. Option letter: replace the characters `.()[],:;!*#{}` by spaces, split on
   whitespace; if exactly one of the option letters (uppercase, as listed)
   appears as a whole token, that is the answer. "The answer is (B)." -> B.
   "B and C" names two -> no letter (then step 2). A lowercase "b" is not an option letter
   (VLMEvalKit is case-sensitive here), and an English article "A" counts as
   option A, exactly as in VLMEvalKit.
2. Else option text: if exactly one option's text occurs in the answer
   (case-insensitive), that option. "It shows pneumonia." -> the pneumonia option.
3. Else the item is unanswered and scored wrong (VLMEvalKit would ask an LLM
   judge; ours is off, so our figure is a lower bound of theirs).

Closed questions (yes/no and other short answers; VQA-RAD, SLAKE, PathVQA):
accuracy. A yes/no reference is matched by the first "yes" or "no" word of the
prediction; another reference must appear as whole words in the prediction.
Open questions (LLaVA-Med): exact match (normalized strings equal) and token
recall (share of the reference's tokens present in the prediction).
Normalization: lowercase, punctuation to spaces, whitespace collapsed.

Answers scored by meaning against a vocabulary (the demo's held-out split,
training/train/heldout.py), so any template's wording counts:
- named answers (a modality, a quadrant): the prediction names exactly the
  vocabulary entries the reference names, at least one, each as a whole phrase
  (case-insensitive; a hyphen joins words, so "X-ray" does not name "ray");
- yes/no answers: the prediction starts with "yes" or "no", and the reference
  starts with the same word.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from training.eval.datasets import EvalItem

_OPTION_PUNCTUATION = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_WORDS = re.compile(r"[^\w\s]", re.UNICODE)


def extract_choice(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer names, or None (see module doc)."""
    tokens = prediction.translate(_OPTION_PUNCTUATION).split()
    named = [letter for letter in options if letter in tokens]
    if len(named) == 1:
        return named[0]
    text = prediction.lower()
    matches = [letter for letter, option in options.items() if option.lower() in text]
    return matches[0] if len(matches) == 1 else None


def normalize(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def closed_correct(prediction: str, reference: str) -> bool:
    pred, ref = normalize(prediction).split(), normalize(reference)
    if ref in ("yes", "no"):
        first = next((w for w in pred if w in ("yes", "no")), None)
        return first == ref
    return f" {ref} " in f" {' '.join(pred)} "


def token_recall(prediction: str, reference: str) -> float:
    ref = normalize(reference).split()
    if not ref:
        return 0.0
    pred = set(normalize(prediction).split())
    return sum(1 for token in ref if token in pred) / len(ref)


def names_in(text: str, names: Iterable[str]) -> set[str]:
    """The entries of `names` that `text` mentions as whole phrases (see module doc)."""
    lowered = text.lower()
    return {
        name
        for name in names
        if re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", lowered)
    }


def same_names(prediction: str, reference: str, names: Iterable[str]) -> bool:
    """The prediction names exactly what the reference names, and that is something."""
    names = list(names)
    return names_in(prediction, names) == names_in(reference, names) != set()


def leading_yes_no(prediction: str, reference: str) -> bool:
    """The prediction starts with yes or no, and the reference starts with the same word."""
    first = re.match(r"\s*(yes|no)\b", prediction.lower())
    return first is not None and reference.lower().startswith(first.group(1))


@dataclass(frozen=True)
class Score:
    """One item's score. `correct` is the headline: the chosen letter for MCQ,
    accuracy for closed, exact match for open questions."""

    correct: bool
    extracted: str | None = None  # mcq: the letter found
    recall: float | None = None  # open questions only


def score_item(item: EvalItem, prediction: str) -> Score:
    if item.kind == "mcq":
        letter = extract_choice(prediction, item.options)
        return Score(letter == item.answer, extracted=letter)
    if item.kind == "closed":
        return Score(closed_correct(prediction, item.answer))
    return Score(
        normalize(prediction) == normalize(item.answer),
        recall=token_recall(prediction, item.answer),
    )


def summarize(
    items: list[EvalItem], scores: dict[str, Score], breakdown_fields: list[str] | None = None
) -> dict[str, Any]:
    """Overall and per-tag figures (percentages, 2 decimals) for the scored items."""
    scored = [item for item in items if item.key in scores]
    fields = breakdown_fields if breakdown_fields is not None else default_breakdowns(scored)
    summary: dict[str, Any] = {"overall": _figures(scored, scores), "breakdowns": {}}
    for name in fields:
        groups: dict[str, list[EvalItem]] = defaultdict(list)
        for item in scored:
            if name in item.tags:
                groups[item.tags[name]].append(item)
        summary["breakdowns"][name] = {
            value: _figures(group, scores) for value, group in sorted(groups.items())
        }
    return summary


def default_breakdowns(items: list[EvalItem], max_values: int = 50) -> list[str]:
    """Tags that split the items into 2..max_values groups (modality, category, ...)."""
    values: dict[str, set[str]] = defaultdict(set)
    for item in items:
        for name, value in item.tags.items():
            values[name].add(value)
    return [name for name, seen in sorted(values.items()) if 2 <= len(seen) <= max_values]


def _figures(items: list[EvalItem], scores: dict[str, Score]) -> dict[str, Any]:
    n = len(items)
    out: dict[str, Any] = {"n": n, "accuracy": _pct(sum(scores[i.key].correct for i in items), n)}
    by_kind: dict[str, list[EvalItem]] = defaultdict(list)
    for item in items:
        by_kind[item.kind].append(item)
    if "closed" in by_kind and len(by_kind) > 1:
        closed = by_kind["closed"]
        out["closed_accuracy"] = _pct(sum(scores[i.key].correct for i in closed), len(closed))
    if "open" in by_kind:
        opened = by_kind["open"]
        out["open_exact_match"] = _pct(sum(scores[i.key].correct for i in opened), len(opened))
        recall = sum(scores[i.key].recall or 0.0 for i in opened)
        out["open_token_recall"] = round(100.0 * recall / len(opened), 2)
    if "mcq" in by_kind:
        mcq = by_kind["mcq"]
        out["unanswered"] = sum(scores[i.key].extracted is None for i in mcq)
    return out


def _pct(hits: int, n: int) -> float:
    return round(100.0 * hits / n, 2) if n else 0.0
