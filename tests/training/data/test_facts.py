import numpy as np
import pytest

from training.data.facts import Box, StructureFacts, box_facts, mask_facts, quadrant


def test_quadrants_follow_the_displayed_image():
    assert quadrant(1, 1, 10, 10) == "upper left"
    assert quadrant(1, 8, 10, 10) == "upper right"
    assert quadrant(8, 1, 10, 10) == "lower left"
    assert quadrant(8, 8, 10, 10) == "lower right"


def test_mask_facts_count_components_locate_and_size_them():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:20, 10:20] = 1  # 100 px, upper left
    mask[70:90, 60:90] = 1  # 600 px, lower right
    mask[5:8, 80:83] = 2  # 9 px, upper right
    facts = mask_facts(mask, {1: "lesion", 2: "cyst", 3: "vessel"})
    assert facts == [
        StructureFacts("lesion", 2, ("upper left", "lower right"), 0.07),
        StructureFacts("cyst", 1, ("upper right",), 0.0009),
    ]
    assert [f.size for f in facts] == ["medium", "small"]


def test_mask_facts_refuse_a_volume():
    with pytest.raises(ValueError):
        mask_facts(np.zeros((2, 2, 2)), {1: "x"})


def test_box_facts_group_by_category():
    boxes = [Box("nodule", 0, 0, 10, 10), Box("nodule", 60, 60, 10, 10), Box("mass", 0, 60, 5, 5)]
    assert box_facts(boxes, 100, 100) == [
        StructureFacts("mass", 1, ("lower left",), 0.0025),
        StructureFacts("nodule", 2, ("upper left", "lower right"), 0.02),
    ]
