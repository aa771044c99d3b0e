"""Which instances of a study a read shows the model.

Non-image series (structured reports, key objects, presentation states,
waveforms, documents, RT plans) are skipped, by modality and by SOP class.
By default each image series gives its middle instance (by Instance Number),
series in Series Number order, up to the per-request image limit; a request
that names a series uses only that one, and one that names SOP Instance UIDs
uses exactly those (they must be image instances of the study).
"""

from __future__ import annotations

from dataclasses import dataclass

from service import errors
from service.media.dicomweb_client import DicomWebClient, InstanceInfo, SeriesInfo

NON_IMAGE_MODALITIES = frozenset(
    {"SR", "KO", "PR", "ECG", "HD", "AU", "DOC", "RTPLAN", "RTRECORD", "REG", "FID", "PLAN"}
)
# SOP class prefixes that hold no picture: SR documents, waveforms, presentation
# states, encapsulated documents, RT plans and records, raw data.
NON_IMAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.4",
    "1.2.840.10008.5.1.4.1.1.66",
)


@dataclass(frozen=True)
class Selected:
    series_instance_uid: str
    sop_instance_uid: str


def is_image_series(series: SeriesInfo) -> bool:
    return series.modality not in NON_IMAGE_MODALITIES


def is_image_instance(instance: InstanceInfo) -> bool:
    return not instance.sop_class_uid.startswith(NON_IMAGE_SOP_CLASSES)


def middle(instances: list[InstanceInfo]) -> InstanceInfo:
    ordered = sorted(instances, key=lambda i: (i.instance_number is None, i.instance_number or 0))
    return ordered[(len(ordered) - 1) // 2]


async def select_instances(
    client: DicomWebClient,
    study: str,
    series_uid: str | None,
    sop_instance_uids: list[str] | None,
    limit: int,
) -> list[Selected]:
    """The instances to show, in order; raises `no_images` when there are none."""
    # One entry per series UID: a PACS may list a series twice (Orthanc does when two
    # patients' files claim one study).
    listed = {s.series_instance_uid: s for s in await client.series(study) if is_image_series(s)}
    series = list(listed.values())
    if series_uid is not None:
        series = [s for s in series if s.series_instance_uid == series_uid]
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0))
    chosen: list[Selected] = []
    wanted = set(sop_instance_uids or ())
    for item in series:
        instances = [
            i
            for i in await client.instances(study, item.series_instance_uid)
            if is_image_instance(i)
        ]
        if wanted:
            chosen += [
                Selected(item.series_instance_uid, i.sop_instance_uid)
                for i in instances
                if i.sop_instance_uid in wanted
            ]
        elif instances:
            chosen.append(Selected(item.series_instance_uid, middle(instances).sop_instance_uid))
            if len(chosen) >= limit:
                break
    if wanted and len(chosen) != len(wanted):
        raise errors.InvalidRequest(
            "Some sop_instance_uids are not image instances of the study (or its series).",
            param="sop_instance_uids",
            code="instance_not_found",
        )
    if not chosen:
        raise errors.InvalidRequest(
            "The study has no image instances to read.",
            param="study_instance_uid",
            code="no_images",
        )
    if len(chosen) > limit:
        raise errors.InvalidRequest(
            f"The read names {len(chosen)} instances; the limit is {limit}.",
            param="sop_instance_uids",
            code="too_many_images",
        )
    return chosen
