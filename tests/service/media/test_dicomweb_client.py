"""QIDO-RS query building and answer summaries (the Orthanc round trip is in
tests/service/api/test_pacs_browse.py)."""

from __future__ import annotations

import pytest

from service import errors
from service.media.dicomweb import check_uid
from service.media.dicomweb_client import _STUDY_FIELDS, study_query, summarize


def test_study_filters_are_forwarded_only_in_their_dicom_shape():
    query = study_query(
        {"StudyDate": "20040101-20041231", "ModalitiesInStudy": "CT", "AccessionNumber": None},
        limit=20,
        offset=5,
    )
    assert query == {
        "StudyDate": "20040101-20041231",
        "ModalitiesInStudy": "CT",
        "limit": "20",
        "offset": "5",
    }
    for name, value in (
        ("StudyDate", "2004-01-01"),
        ("StudyDate", "20040101*"),
        ("ModalitiesInStudy", "CT&PatientName=*"),
        ("AccessionNumber", "x" * 40),
    ):
        with pytest.raises(errors.InvalidRequest) as info:
            study_query({name: value}, 10, 0)
        assert info.value.param == name and value not in info.value.message
    with pytest.raises(errors.InvalidRequest):
        study_query({"PatientName": "DOE*"}, 10, 0)
    with pytest.raises(errors.InvalidRequest):
        study_query({}, 0, 0)
    with pytest.raises(errors.InvalidRequest):
        study_query({}, 201, 0)


def test_uids_are_digits_and_dots():
    assert check_uid("1.2.840.10008", "study") == "1.2.840.10008"
    for bad in ("1.2.3/../../instances", "1.2.abc", "", "1" * 65):
        with pytest.raises(errors.InvalidRequest):
            check_uid(bad, "study")


def test_summaries_keep_the_picker_fields_and_nothing_else():
    match = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080020": {"vr": "DA", "Value": ["20040119"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00201206": {"vr": "IS", "Value": [2]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},  # dropped
        "00081030": {"vr": "LO"},  # present without a value
    }
    summary = summarize(match, _STUDY_FIELDS)
    assert summary["study_instance_uid"] == "1.2.3"
    assert summary["study_date"] == "20040119"
    assert summary["modalities"] == ["CT", "SR"]
    assert summary["series_count"] == 2
    assert summary["description"] is None
    assert "Doe" not in repr(summary)
