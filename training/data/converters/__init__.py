"""Converters from the common layouts of annotated medical datasets to records.

Each converter lists a source's items (`items`), then turns one item into
records (`convert`); an unusable file raises `BadSourceFile` and the build
reports it. `CONVERTERS` maps a source's `kind` to its converter.
"""

from __future__ import annotations

from training.data.converters.base import BadSourceFile, Converter, SourceSpec
from training.data.converters.classification import ClassificationConverter
from training.data.converters.detection import DetectionConverter
from training.data.converters.dicom_folder import DicomFolderConverter
from training.data.converters.segmentation import SegmentationConverter
from training.data.converters.volume import VolumeConverter

CONVERTERS: dict[str, Converter] = {
    "classification": ClassificationConverter(),
    "segmentation": SegmentationConverter(),
    "volume": VolumeConverter(),
    "detection": DetectionConverter(),
    "dicom": DicomFolderConverter(),
}

__all__ = ["CONVERTERS", "BadSourceFile", "Converter", "SourceSpec"]
