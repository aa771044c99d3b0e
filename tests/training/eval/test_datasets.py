import pytest

from tests.training.eval.fixtures import (
    png,
    write_mcq_tsv,
    write_pathvqa,
    write_slake,
    write_vqa_rad,
)
from training.eval.datasets import BenchmarkFormatError, load_benchmark


def test_vlmevalkit_tsv(tmp_path):
    items = load_benchmark(write_mcq_tsv(tmp_path / "GMAI_mm_bench_VAL.tsv"))
    assert [i.key for i in items] == ["1", "2", "3", "4", "5"]
    first, second, third = items[:3]
    assert first.kind == "mcq" and first.answer == "C"
    assert first.options == {"A": "Liver", "B": "Kidney", "C": "Lung", "D": "Heart"}
    assert second.options == {"A": "MRI", "B": "CT", "C": "X-ray"}  # empty D is absent
    assert second.hint == "Look at the contrast." and first.hint is None
    assert first.tags == {"category": "organ", "modality": "CT"}
    assert first.image == png() and third.image == png()  # "1" refers to row 1's image


def test_vqa_rad_json(tmp_path):
    closed, opened = load_benchmark(write_vqa_rad(tmp_path))
    assert (closed.kind, closed.answer, closed.key) == ("closed", "Yes", "1")
    assert opened.kind == "open" and opened.tags["question_type"] == "POS"
    assert closed.tags["organ"] == "CHEST" and closed.image == png()


def test_slake_json(tmp_path):
    opened, closed = load_benchmark(write_slake(tmp_path))
    assert opened.kind == "open" and closed.kind == "closed"
    assert opened.tags == {
        "answer_type": "open",
        "modality": "CT",
        "question_type": "Organ",
        "language": "en",
        "location": "Chest",
    }


def test_pathvqa_json_yes_no_is_closed(tmp_path):
    closed, opened = load_benchmark(write_pathvqa(tmp_path))
    assert closed.kind == "closed" and opened.kind == "open"
    assert closed.key == "p1"


def test_clear_errors_for_unknown_layouts(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "bad.json").write_text('[{"foo": 1}]')
    (tmp_path / "bad.tsv").write_text("foo\tbar\n1\t2\n")
    for name in ("x.csv", "bad.json", "bad.tsv"):
        with pytest.raises(BenchmarkFormatError):
            load_benchmark(tmp_path / name)


def test_missing_image_names_the_file(tmp_path):
    path = write_pathvqa(tmp_path)
    (tmp_path / "images" / "test_0001.jpg").unlink()
    with pytest.raises(BenchmarkFormatError, match=r"test_0001\.jpg"):
        load_benchmark(path)
