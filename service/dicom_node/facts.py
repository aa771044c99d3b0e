"""What the rules see of a spooled study: each instance's header (no pixels read)."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from service.dicom_node.rules import InstanceFacts, StudyFacts
from service.reads.selection import NON_IMAGE_MODALITIES, NON_IMAGE_SOP_CLASSES, middle

TAGS = [
    "StudyInstanceUID",
    "StudyDescription",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "BodyPartExamined",
]


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def instance_facts(path: Path) -> tuple[InstanceFacts, str]:
    """One file's facts and its study description."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=TAGS)
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "") or "")
    facts = InstanceFacts(
        sop_class_uid=sop_class,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=modality,
        body_part=str(ds.get("BodyPartExamined", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=_int(ds.get("SeriesNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        path=path,
        is_image=(
            modality.upper() not in NON_IMAGE_MODALITIES
            and not sop_class.startswith(NON_IMAGE_SOP_CLASSES)
        ),
    )
    return facts, str(ds.get("StudyDescription", "") or "")


def study_facts(study_uid: str, calling_aes: list[str], files: list[Path]) -> StudyFacts:
    instances = []
    description = ""
    for path in files:
        try:
            facts, study_description = instance_facts(path)
        except (OSError, ValueError, AttributeError):
            continue  # a file the SCP accepted but that no longer reads: skipped
        instances.append(facts)
        description = description or study_description
    return StudyFacts(study_uid, description, tuple(calling_aes), tuple(instances))


def select(instances: tuple[InstanceFacts, ...], limit: int) -> list[InstanceFacts]:
    """The middle instance (by Instance Number) of each series, series in Series
    Number order, up to `limit`: the same policy as reads from a PACS."""
    series: dict[str, list[InstanceFacts]] = {}
    for item in instances:
        series.setdefault(item.series_instance_uid, []).append(item)
    ordered = sorted(
        series.values(), key=lambda s: (s[0].series_number is None, s[0].series_number or 0)
    )
    return [middle(members) for members in ordered[:limit]]  # type: ignore[arg-type]
