"""Synthetic studies for the DICOM node tests: pydicom's CT_small and MR_small
re-identified into one study of several series, with PHI markers in every
patient field so a test can prove they reach no log, metric or error."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PHI_NAME = "PHIMARKER^Zebulon"
PHI_ID = "PHIMRN-8841-77"
PHI_MARKERS = ("PHIMARKER", "Zebulon", PHI_ID)


@dataclass
class Study:
    study_instance_uid: str
    files: list[bytes] = field(default_factory=list)
    series: dict[str, str] = field(default_factory=dict)  # series UID -> modality
    sop_instance_uids: list[str] = field(default_factory=list)


def make_study(
    series: list[tuple[str, int]],
    size: int | None = None,
    description: str = "CHEST CT WITH CONTRAST",
    body_part: str = "CHEST",
) -> Study:
    """One study with the given (modality, instance count) series. CT series come from
    CT_small, MR from MR_small; `size` resamples the pixels to size x size."""
    study_uid = generate_uid()
    study = Study(study_uid)
    templates = {"CT": dcmread(get_testdata_file("CT_small.dcm")),
                 "MR": dcmread(get_testdata_file("MR_small.dcm"))}  # fmt: skip
    for number, (modality, count) in enumerate(series, start=1):
        series_uid = generate_uid()
        study.series[series_uid] = modality
        for index in range(count):
            ds = copy.deepcopy(templates[modality])
            ds.PatientName = PHI_NAME
            ds.PatientID = PHI_ID
            ds.PatientBirthDate = "19010101"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesNumber = number
            ds.InstanceNumber = index + 1
            ds.StudyDescription = description
            ds.SeriesDescription = f"{modality} series {number}"
            ds.BodyPartExamined = body_part
            ds.AccessionNumber = "ACC1"
            if size is not None:
                pixels = np.resize(ds.pixel_array, (size, size)).astype(ds.pixel_array.dtype)
                pixels = pixels + np.int16(index % 7) if pixels.dtype.kind == "i" else pixels
                ds.Rows = ds.Columns = size
                ds.PixelData = pixels.tobytes()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
            study.files.append(buf.getvalue())
            study.sop_instance_uids.append(str(ds.SOPInstanceUID))
    return study


def malformed_instance(path: Path) -> Path:
    """A file with valid file meta (a CT image's) and then an element whose length runs
    past the end of the data set: send it with pynetdicom's
    `_config.STORE_SEND_CHUNKED_DATASET = True` so its bytes go out as they are."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    head = Dataset()
    head.file_meta = ds.file_meta
    meta = io.BytesIO()
    head.save_as(meta, enforce_file_format=True)
    path.write_bytes(meta.getvalue() + b"\x08\x00\x16\x00UI\xf0\x00" + b"1." * 8)
    return path
