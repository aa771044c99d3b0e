"""COCO detection: boxes -> per-category count and location."""

import json

import pytest

from tests.training.data.fixtures import fillings, qa, write_coco
from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec


@pytest.fixture
def source(tmp_path):
    write_coco(tmp_path)
    return SourceSpec(name="nodules", kind="detection", root=tmp_path, modality="xray")


def test_boxes_give_counts_and_locations(source, tmp_path):
    converter = CONVERTERS["detection"]
    items = converter.items(source)
    assert [i["file"] for i in items] == ["a.png", "b.png"]
    records = [r.to_json() for r in converter.convert(source, items[0], tmp_path)]
    assert records[0]["id"] == "2d#det#xray#nodules#a.png#modality0"
    by_type = {}
    for r in records:
        by_type.setdefault(r["question_type"], []).append(qa(r))
    assert by_type["presence"][0] in fillings("presence_no", name="mass")
    assert by_type["presence"][1] in fillings("presence_yes", name="nodule")
    where = "upper left and lower right"
    assert by_type["location"] == [by_type["location"][0]]
    assert by_type["location"][0] in fillings("location", name="nodule", where=where)
    assert by_type["count"][0] in fillings("count", name="nodule", count=2)
    assert by_type["size"][0] in fillings("size", name="nodule", size="medium", percent=6)
    assert "location_mcq" not in by_type  # two places: no single right option
    empty = [qa(r.to_json()) for r in converter.convert(source, items[1], tmp_path)]
    assert empty[3] in fillings("presence_no", name="mass")
    assert empty[4] in fillings("presence_no", name="nodule")


def test_a_box_outside_its_image_is_a_bad_file(source, tmp_path):
    coco = json.loads((tmp_path / "annotations.json").read_text())
    coco["annotations"][0]["bbox"] = [90, 10, 50, 10]
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    converter = CONVERTERS["detection"]
    with pytest.raises(BadSourceFile, match="outside"):
        converter.convert(source, converter.items(source)[0], tmp_path)
