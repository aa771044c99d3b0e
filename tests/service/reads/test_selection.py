"""Which instances a read shows: the pure rules (the QIDO-RS side runs against Orthanc
in tests/e2e/test_dicom_reads.py)."""

from __future__ import annotations

from service.media.dicomweb import valid_uid
from service.media.dicomweb_client import InstanceInfo, SeriesInfo
from service.reads.selection import is_image_instance, is_image_series, middle

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_middle_is_by_instance_number_whatever_the_listing_order():
    listed = [InstanceInfo(f"1.{n}", CT, n) for n in (5, 1, 3, 2, 4)]
    assert middle(listed).instance_number == 3
    assert middle(listed[:4]).instance_number == 2  # even: the lower middle
    assert middle([InstanceInfo("1.9", CT, None), InstanceInfo("1.8", CT, 7)]).sop_instance_uid


def test_non_image_series_and_instances_are_skipped():
    assert is_image_series(SeriesInfo("1.1", "CT", 1))
    for modality in ("SR", "KO", "PR", "ECG", "DOC"):
        assert not is_image_series(SeriesInfo("1.1", modality, 1))
    assert is_image_instance(InstanceInfo("1.1", CT, 1))
    for sop_class in (
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG
        "1.2.840.10008.5.1.4.1.1.11.1",  # grayscale presentation state
        "1.2.840.10008.5.1.4.1.1.104.1",  # encapsulated PDF
    ):
        assert not is_image_instance(InstanceInfo("1.1", sop_class, 1))


def test_uids_are_checked_before_they_become_a_path():
    assert valid_uid("1.2.840.10008.5.1.4.1.1.2")
    for bad in ("", "1..2", "1.2/../x", "1.2 3", "1" * 65, "1.2."):
        assert not valid_uid(bad)
