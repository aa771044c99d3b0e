"""Extraction pinned on tricky answers; summaries checked against hand-computed values."""

import pytest

from training.eval.datasets import EvalItem
from training.eval.scoring import (
    closed_correct,
    extract_choice,
    leading_yes_no,
    names_in,
    same_names,
    score_item,
    summarize,
    token_recall,
)

OPTIONS = {"A": "Pneumonia", "B": "Normal", "C": "Tuberculosis", "D": "Pleural effusion"}


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("[D]", "D"),
        ("**A**", "A"),
        ("B and C", None),  # two letters, and no single option text
        ("b", None),  # lowercase letters are not option letters (as in VLMEvalKit)
        ("the answer is c", None),
        ("Tuberculosis", "C"),  # no letter: the one option whose text appears
        ("It looks like pleural effusion on the left.", "D"),
        ("pneumonia or tuberculosis", None),  # two option texts
        ("I cannot determine this from the image.", None),  # refusal
        ("Sorry, I can't help with that.", None),
        ("A nodule is seen, so B.", None),  # the article "A" counts, as in VLMEvalKit
        ("", None),
    ],
)
def test_extract_choice(prediction, expected):
    assert extract_choice(prediction, OPTIONS) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("Yes.", "yes", True),
        ("Yes, there is an effusion, no fracture.", "yes", True),  # the first yes/no decides
        ("No", "yes", False),
        ("Nodule present", "no", False),  # "nodule" is not "no"
        ("There is no effusion", "no", True),
        ("the right lung", "Right lung", True),
        ("the lungs", "lung", False),  # whole words only
    ],
)
def test_closed_correct(prediction, reference, correct):
    assert closed_correct(prediction, reference) is correct


QUADRANTS = ("upper left", "upper right", "lower left", "lower right")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("The lesion is in the upper left.", {"upper left"}),
        ("UPPER LEFT and lower right", {"upper left", "lower right"}),
        ("the upper-left corner", set()),  # a hyphen joins words
        ("upper lefts", set()),  # whole phrases only
        ("", set()),
    ],
)
def test_names_in(text, names):
    assert names_in(text, QUADRANTS) == names


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("In the upper left.", "The lesion is in the upper left.", True),
        ("Upper left and lower right.", "In the upper left.", False),  # one name too many
        ("Somewhere.", "Nowhere.", False),  # nothing named on either side is not a match
        ("X-ray", "This is a CT image.", False),
    ],
)
def test_same_names(prediction, reference, correct):
    assert same_names(prediction, reference, (*QUADRANTS, "CT", "X-ray")) is correct


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("Yes.", "Yes, there is a lesion.", True),
        ("  no lesion", "No.", True),
        ("I think yes", "Yes.", False),  # yes/no must come first
        ("Nodule present", "No.", False),  # "nodule" is not "no"
        ("Yes, a lesion is visible.", "No, no lesion is visible.", False),
    ],
)
def test_leading_yes_no(prediction, reference, correct):
    assert leading_yes_no(prediction, reference) is correct


def test_token_recall():
    assert token_recall("mass in the right upper lobe", "Right upper lobe.") == 1.0
    assert token_recall("right side", "right upper lobe") == pytest.approx(1 / 3)
    assert token_recall("anything", "") == 0.0


def mcq(key, answer, tags):
    return EvalItem(key, "mcq", "q", answer, None, OPTIONS, tags=tags)


def test_summary_matches_hand_computed_values():
    items = [
        mcq("1", "A", {"modality": "CT"}),
        mcq("2", "B", {"modality": "CT"}),
        mcq("3", "C", {"modality": "MR"}),
        mcq("4", "D", {"modality": "MR"}),
        mcq("5", "A", {"modality": "MR"}),
    ]
    predictions = {"1": "A", "2": "The answer is (C).", "3": "tuberculosis", "4": "b", "5": "(A)"}
    scores = {i.key: score_item(i, predictions[i.key]) for i in items}
    summary = summarize(items, scores)
    # correct: 1, 3, 5 -> 3/5; CT: 1 of 2; MR: 2 of 3; unanswered: item 4 only
    assert summary["overall"] == {"n": 5, "accuracy": 60.0, "unanswered": 1}
    assert summary["breakdowns"] == {
        "modality": {
            "CT": {"n": 2, "accuracy": 50.0, "unanswered": 0},
            "MR": {"n": 3, "accuracy": 66.67, "unanswered": 1},
        }
    }


def test_vqa_summary_closed_and_open_figures():
    items = [
        EvalItem("c1", "closed", "q", "yes", None, tags={"answer_type": "closed"}),
        EvalItem("c2", "closed", "q", "no", None, tags={"answer_type": "closed"}),
        EvalItem("o1", "open", "q", "right upper lobe", None, tags={"answer_type": "open"}),
        EvalItem("o2", "open", "q", "liver", None, tags={"answer_type": "open"}),
    ]
    predictions = {"c1": "Yes", "c2": "Yes", "o1": "right lobe", "o2": "Liver."}
    scores = {i.key: score_item(i, predictions[i.key]) for i in items}
    overall = summarize(items, scores)["overall"]
    # closed: 1/2; open exact: o2 only -> 1/2; recall: (2/3 + 1) / 2 = 83.33
    # headline accuracy: c1 + o2 = 2 of 4
    assert overall == {
        "n": 4,
        "accuracy": 50.0,
        "closed_accuracy": 50.0,
        "open_exact_match": 50.0,
        "open_token_recall": 83.33,
    }


def test_breakdown_fields_can_be_chosen_and_single_valued_tags_are_skipped():
    items = [
        mcq("1", "A", {"modality": "CT", "split": "val"}),
        mcq("2", "B", {"modality": "MR", "split": "val"}),
    ]
    scores = {i.key: score_item(i, "A") for i in items}
    assert list(summarize(items, scores)["breakdowns"]) == ["modality"]
    assert list(summarize(items, scores, ["split"])["breakdowns"]) == ["split"]
