"""Classification: class-per-folder and CSV layouts."""

import pytest

from tests.training.data.fixtures import fillings, grey, qa, write_png
from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec


def check_class_records(records, label, classes):
    pairs = [qa(r.to_json()) for r in records]
    assert pairs[0] in fillings("class_caption", modality="histopathology", label=label)
    assert pairs[1] in fillings("class", label=label)
    assert pairs[2] in fillings("modality", modality="histopathology")
    yes_no = set()
    for candidate in classes:
        family = "class_yes" if candidate == label else "class_no"
        yes_no |= fillings(family, candidate=candidate, label=label)
    assert pairs[3] in yes_no
    question, answer = pairs[4]
    assert answer.endswith(f". {label}") and f"{answer}\n" in question + "\n"


def test_folder_layout(tmp_path):
    write_png(tmp_path / "NORM" / "x.png", grey(30, 20))
    write_png(tmp_path / "TUM" / "y.png", grey(30, 20))
    write_png(tmp_path / "loose.png", grey(30, 20))  # not in a class folder: not an item
    spec = SourceSpec(name="crc100k", kind="classification", root=tmp_path,
                      modality="histopathology")  # fmt: skip
    converter = CONVERTERS["classification"]
    items = converter.items(spec)
    assert items == [("NORM/x.png", "NORM"), ("TUM/y.png", "TUM")]
    records = converter.convert(spec, items[0], tmp_path)
    assert records[0].id == "2d#cls#histopathology#crc100k#NORM#x.png#caption0"
    assert (records[0].width, records[0].height) == (30, 20)
    check_class_records(records, "NORM", ["NORM", "TUM"])


def test_csv_layout_and_its_bad_rows(tmp_path):
    write_png(tmp_path / "imgs" / "a.png", grey(16, 16))
    (tmp_path / "labels.csv").write_text(
        "file,diagnosis\nimgs/a.png,melanoma\nimgs/gone.png,naevus\nimgs/a.png,\n"
    )
    spec = SourceSpec(name="isic", kind="classification", root=tmp_path,
                      modality="histopathology", layout="csv", image_column="file",
                      label_column="diagnosis")  # fmt: skip
    converter = CONVERTERS["classification"]
    items = converter.items(spec)
    assert items == [("imgs/a.png", "melanoma"), ("imgs/gone.png", "naevus"), ("imgs/a.png", "")]
    check_class_records(converter.convert(spec, items[0], tmp_path), "melanoma",
                        ["melanoma", "naevus"])  # fmt: skip
    with pytest.raises(BadSourceFile, match="missing"):
        converter.convert(spec, items[1], tmp_path)
    with pytest.raises(BadSourceFile, match="empty label"):
        converter.convert(spec, items[2], tmp_path)


def test_csv_without_the_named_columns_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("path,y\na.png,1\n")
    spec = SourceSpec(name="s", kind="classification", root=tmp_path, modality="xray",
                      layout="csv")  # fmt: skip
    with pytest.raises(ValueError, match="lacks columns"):
        CONVERTERS["classification"].items(spec)
