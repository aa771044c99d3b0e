"""Held-out scoring by meaning; the evaluation runs the exported checkpoint."""

import pytest

from training.train.heldout import evaluate_heldout, format_summary, is_correct


@pytest.mark.parametrize(
    ("qtype", "expected", "predicted", "correct"),
    [
        ("modality", "This is a CT image.", "The modality is CT.", True),
        ("modality", "This is a CT image.", "CT or X-ray.", False),
        ("modality", "This is a X-ray image.", "This is a CT image.", False),
        ("modality", "Fundus photography.", "fundus photography", True),
        ("presence", "Yes, there is a lesion.", "Yes.", True),
        ("presence", "No, no lesion is visible.", "Yes, a lesion is visible.", False),
        ("presence", "No.", "Not sure", False),
        ("location", "In the upper left.", "The lesion is in the upper left.", True),
        ("location", "In the upper left.", "Upper left and lower right.", False),
        ("location", "In the upper left.", "In the upper right.", False),
    ],
)
def test_scoring_rules(qtype, expected, predicted, correct):
    assert is_correct(qtype, expected, predicted) is correct


def test_unknown_question_types_are_refused():
    with pytest.raises(ValueError):
        is_correct("size", "small", "small")


def test_evaluation_answers_every_heldout_question(tiny_checkpoint, demo_corpus):
    summary, scored = evaluate_heldout(
        tiny_checkpoint, demo_corpus / "heldout" / "annotations.json", progress=False
    )
    assert summary["modality_n"] == summary["presence_n"] == 10
    assert len(scored) == sum(int(summary[f"{t}_n"]) for t in ("modality", "presence", "location")
                              if f"{t}_n" in summary)  # fmt: skip
    assert all(s.question_type in ("modality", "presence", "location") for s in scored)
    assert "modality:" in format_summary(summary)
