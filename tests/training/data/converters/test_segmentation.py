"""2D segmentation: image + mask PNG -> records whose answers are the mask's facts."""

import numpy as np
import pytest

from tests.training.data.fixtures import fillings, grey, qa, write_png
from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec


@pytest.fixture
def source(tmp_path):
    write_png(tmp_path / "images" / "x.png", grey(64, 48))
    mask = np.zeros((48, 64), np.uint8)
    mask[5:15, 5:15] = 1  # 100 of 3072 px: a medium lesion, upper left
    write_png(tmp_path / "masks" / "x.png", mask)
    write_png(tmp_path / "images" / "orphan.png", grey(64, 48))  # no mask
    return SourceSpec(
        name="src", kind="segmentation", root=tmp_path, modality="ct",
        labels={1: "lesion", 2: "vessel"},
    )  # fmt: skip


def test_records_state_the_mask_facts(source, tmp_path):
    converter = CONVERTERS["segmentation"]
    assert converter.items(source) == ["images/orphan.png", "images/x.png"]
    records = [r.to_json() for r in converter.convert(source, "images/x.png", tmp_path)]
    assert [r["id"] for r in records] == [
        f"2d#seg#ct#src#images#x.png#{v}"
        for v in ("modality0", "caption1", "structures2", "presence3", "location4", "count5",
                  "size6", "location_mcq7", "presence8")
    ]  # fmt: skip
    assert {(r["image"], r["width"], r["height"], r["modality"], r["lang"]) for r in records} == {
        ("images/x.png", 64, 48, "ct", "en")
    }
    expected = [
        fillings("modality", modality="CT"),
        fillings("caption_with", modality="CT", findings="a medium lesion in the upper left"),
        fillings("structures", names="lesion and vessel", present="lesion"),
        fillings("presence_yes", name="lesion"),
        fillings("location", name="lesion", where="upper left"),
        fillings("count", name="lesion", count=1),
        fillings("size", name="lesion", size="medium", percent=3),
    ]
    for record, allowed in zip(records, expected, strict=False):
        assert qa(record) in allowed
    question, answer = qa(records[7])
    assert question.startswith("Where is the lesion?\nA. ")
    letter = answer[0]
    assert f"\n{letter}. upper left\n" in question + "\n"
    assert answer == f"{letter}. upper left"
    assert qa(records[8]) in fillings("presence_no", name="vessel")


def test_an_empty_mask_gives_no_answers(source, tmp_path):
    write_png(tmp_path / "masks" / "x.png", np.zeros((48, 64), np.uint8))
    records = CONVERTERS["segmentation"].convert(source, "images/x.png", tmp_path)
    pairs = [qa(r.to_json()) for r in records]
    assert pairs[1] in fillings("caption_without", modality="CT", names="lesion and vessel")
    assert pairs[2] in fillings("structures", names="lesion and vessel", present="None of them")
    assert pairs[3] in fillings("presence_no", name="lesion")
    assert len(pairs) == 5


def test_missing_or_mismatched_masks_are_bad_files(source, tmp_path):
    converter = CONVERTERS["segmentation"]
    with pytest.raises(BadSourceFile, match="no mask"):
        converter.convert(source, "images/orphan.png", tmp_path)
    write_png(tmp_path / "masks" / "x.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(BadSourceFile, match="differs"):
        converter.convert(source, "images/x.png", tmp_path)


def test_records_are_reproducible_and_chinese_when_asked(source, tmp_path):
    converter = CONVERTERS["segmentation"]
    first = converter.convert(source, "images/x.png", tmp_path)
    assert converter.convert(source, "images/x.png", tmp_path) == first
    source.languages = ["zh"]
    records = [r.to_json() for r in converter.convert(source, "images/x.png", tmp_path)]
    assert {r["lang"] for r in records} == {"zh"}
    assert qa(records[4]) in fillings("location", "zh", name="lesion", where="左上")
