"""3D segmentation: a NIfTI volume and mask -> slices with foreground, PNGs, mask facts."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.training.data.fixtures import fillings, qa
from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec


@pytest.fixture
def source(tmp_path):
    volume = np.full((20, 24, 6), -1000.0, np.float32)  # air, in HU
    mask = np.zeros((20, 24, 6), np.uint8)
    volume[2:7, 2:7, 2:4] = 40.0  # a soft-tissue lesion at low x, low y, slices 2 and 3
    mask[2:7, 2:7, 2:4] = 1
    (tmp_path / "vol" / "images").mkdir(parents=True)
    (tmp_path / "vol" / "masks").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vol" / "images" / "case1.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "vol" / "masks" / "case1.nii.gz")
    return SourceSpec(name="kits", kind="volume", root=tmp_path / "vol", modality="ct",
                      labels={1: "tumor"}, window=(-200.0, 200.0))  # fmt: skip


def test_slices_with_foreground_become_pngs_and_records(source, tmp_path):
    converter = CONVERTERS["volume"]
    out = tmp_path / "out"
    assert converter.items(source) == ["case1.nii.gz"]
    records = [r.to_json() for r in converter.convert(source, "case1.nii.gz", out)]
    assert sorted({r["image"] for r in records}) == ["case1/z002.png", "case1/z003.png"]
    assert records[0]["id"] == "3d#seg#ct#kits#case1#z002.png#modality0"
    assert {(r["width"], r["height"]) for r in records} == {(20, 24)}
    # Displayed with x to the right and y up: low x, low y is the lower left.
    locations = [qa(r) for r in records if r["question_type"] == "location"]
    assert len(locations) == 2
    assert set(locations) <= fillings("location", name="tumor", where="lower left")
    pixels = np.asarray(Image.open(converter.image_dir(source, out) / "case1" / "z002.png"))
    assert pixels.shape == (24, 20)
    assert pixels[19, 4] == 153 and pixels[0, 0] == 0  # 40 HU in a -200..200 window; air


def test_a_mask_of_another_shape_is_a_bad_file(source, tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)),
             source.root / "masks" / "case1.nii.gz")  # fmt: skip
    with pytest.raises(BadSourceFile, match="differs"):
        CONVERTERS["volume"].convert(source, "case1.nii.gz", tmp_path / "out")


def test_a_broken_volume_is_a_bad_file(source, tmp_path):
    (source.root / "images" / "case1.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(BadSourceFile, match="NIfTI"):
        CONVERTERS["volume"].convert(source, "case1.nii.gz", tmp_path / "out")
