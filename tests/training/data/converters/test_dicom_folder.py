"""DICOM folders labelled by their own tags, rendered through the service's windowing."""

import io
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from service.config import ImageLimits
from service.media.dicom import DicomOptions, dicom_to_rgb
from tests.training.data.fixtures import fillings, qa
from training.data.build import BuildConfig, build
from training.data.converters import CONVERTERS, BadSourceFile, SourceSpec

MARKER = "Doe^Jane-MRN-4711"


def with_tags(name: str, **tags) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pacs-export"
    (root / "study1").mkdir(parents=True)
    (root / "study1" / "ct1").write_bytes(
        with_tags("CT_small.dcm", BodyPartExamined="CHEST", PatientName=MARKER)
    )
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "study1" / "mr1.dcm")
    shutil.copy(get_testdata_file("waveform_ecg.dcm"), root / "ecg.dcm")  # not an image
    (root / "broken.dcm").write_bytes(with_tags("CT_small.dcm")[:2000])  # truncated
    return root


def test_records_come_from_the_tags_and_pixels_from_the_service_windowing(folder, tmp_path):
    spec = SourceSpec(name="pacs", kind="dicom", root=folder)
    converter = CONVERTERS["dicom"]
    items = converter.items(spec)
    assert items == ["broken.dcm", "ecg.dcm", "study1/ct1", "study1/mr1.dcm"]
    out = tmp_path / "out"

    ct = converter.convert(spec, "study1/ct1", out)
    assert [r.id for r in ct] == [
        "2d#dicom#ct#pacs#study1#ct1.png#modality0",
        "2d#dicom#ct#pacs#study1#ct1.png#body_part1",
        "2d#dicom#ct#pacs#study1#ct1.png#caption2",
    ]
    pairs = [qa(r.to_json()) for r in ct]
    assert pairs[0] in fillings("modality", modality="CT")
    assert pairs[1] in fillings("body_part", body_part="chest")
    assert pairs[2] in fillings("study_caption", modality="CT", body_part="chest")
    assert (ct[0].width, ct[0].height) == (128, 128)
    written = np.asarray(Image.open(out / "images" / "pacs" / "study1" / "ct1.png"))
    served = dicom_to_rgb((folder / "study1" / "ct1").read_bytes(), DicomOptions(), ImageLimits())
    assert np.array_equal(written, served.frames[0].rgb)  # the pixels the service would serve

    mr = converter.convert(spec, "study1/mr1.dcm", out)
    assert [r.modality for r in mr] == ["mri"]  # no BodyPartExamined: modality only
    assert qa(mr[0].to_json()) in fillings("modality", modality="MRI")

    with pytest.raises(BadSourceFile, match="not a displayable DICOM image"):
        converter.convert(spec, "ecg.dcm", out)
    with pytest.raises(BadSourceFile, match="not a displayable DICOM image"):
        converter.convert(spec, "broken.dcm", out)


def test_a_dicom_source_in_a_build_reports_bad_files_without_phi(folder, tmp_path):
    out = tmp_path / "out"
    spec = SourceSpec(name="pacs", kind="dicom", root=folder, languages=["en", "zh"])
    manifest = build(BuildConfig(sources=[spec], workers=1), out, progress=False)
    assert manifest["sources"]["pacs"]["records"] == 4  # ct: 3 records, mr: 1
    assert manifest["bad_files"] == 2
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert MARKER not in path.read_text(encoding="utf-8")
