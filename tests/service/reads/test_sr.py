"""The Structured Report: what a PACS and a viewer read from it, checked with pydicom
and highdicom on pydicom's own test files."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service import __version__
from service.reads.sr import UTF8, build_sr, character_set, source_header

ANSWER_ZH = "未见急性异常。No acute abnormality."


def header(name: str, **changes):
    ds = source_header(Path(get_testdata_file(name)).read_bytes())
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def built(sources, question="Findings?", answer=ANSWER_ZH):
    result = build_sr(sources, question, answer, "gmai-vl-7b", "2.1")
    return result, dcmread(io.BytesIO(result.data))


def test_the_report_is_an_unverified_comprehensive_sr_in_the_source_study():
    ct = header("CT_small.dcm")
    result, ds = built([ct])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.Modality == "SR" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.StudyInstanceUID == ct.StudyInstanceUID == result.study_instance_uid
    assert ds.PatientID == ct.PatientID and ds.PatientName == ct.PatientName
    assert ds.SeriesInstanceUID == result.series_instance_uid != ct.SeriesInstanceUID
    assert "AI-generated" in ds.SeriesDescription
    assert "not for diagnostic use" in ds.SeriesDescription
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "GMAI-VL"]
    assert ours and ours[0].SoftwareVersions == __version__


def test_question_answer_and_the_model_as_device_observer():
    _, ds = built([header("CT_small.dcm")], question="Any fracture?")
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue
             for i in ds.ContentSequence if i.RelationshipType == "CONTAINS"}  # fmt: skip
    assert texts == {"Request": "Any fracture?", "Finding": ANSWER_ZH}
    context = {i.ConceptNameCodeSequence[0].CodeMeaning: i
               for i in ds.ContentSequence if i.RelationshipType == "HAS OBS CONTEXT"}  # fmt: skip
    assert context["Device Observer Name"].TextValue == "gmai-vl-7b"
    assert context["Device Observer Model Name"].TextValue == "gmai-vl-7b 2.1"
    finding = next(i for i in ds.ContentSequence if i.get("TextValue") == ANSWER_ZH)
    modifiers = [i for i in finding.ContentSequence if i.RelationshipType == "HAS CONCEPT MOD"]
    algorithm = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in modifiers}
    assert algorithm == {"Algorithm Name": "gmai-vl-7b", "Algorithm Version": "2.1",
                         "Algorithm Manufacturer": "GMAI-VL"}  # fmt: skip


def test_references_and_evidence_name_every_source_image():
    ct, mr = header("CT_small.dcm"), header("MR_small.dcm")
    mr.StudyInstanceUID = ct.StudyInstanceUID  # two series of one study
    _, ds = built([ct, mr])
    document = hd.sr.ComprehensiveSR.from_dataset(ds)
    assert [e[2] for e in document.get_evidence()] == [ct.SOPInstanceUID, mr.SOPInstanceUID]
    finding = next(i for i in ds.ContentSequence if i.get("TextValue") == ANSWER_ZH)
    images = [i for i in finding.ContentSequence if i.ValueType == "IMAGE"]
    refs = [i.ReferencedSOPSequence[0] for i in images]
    assert [r.ReferencedSOPInstanceUID for r in refs] == [ct.SOPInstanceUID, mr.SOPInstanceUID]
    assert {i.RelationshipType for i in images} == {"INFERRED FROM"}


@pytest.mark.parametrize(
    ("source_charset", "answer", "expected"),
    [
        (None, "No acute abnormality.", None),  # ASCII fits the default repertoire
        (None, ANSWER_ZH, UTF8),
        ("ISO_IR 100", "Befund: unauffällig.", "ISO_IR 100"),
        ("ISO_IR 100", ANSWER_ZH, UTF8),
        ("ISO_IR 192", ANSWER_ZH, UTF8),
    ],
)
def test_the_answer_survives_exactly_in_any_source_character_set(source_charset, answer, expected):
    ct = header("CT_small.dcm")
    if source_charset is None:
        if "SpecificCharacterSet" in ct:
            del ct.SpecificCharacterSet
    else:
        ct.SpecificCharacterSet = source_charset
    _, ds = built([ct], answer=answer)
    assert ds.get("SpecificCharacterSet") in ((expected,) if expected else (None, "ISO_IR 6"))
    text = next(i.TextValue for i in ds.ContentSequence if i.get("TextValue") == answer)
    assert text == answer and "?" not in text


def test_character_set_keeps_a_multi_valued_source_when_it_fits():
    ds = header("CT_small.dcm", SpecificCharacterSet=["", "ISO 2022 IR 87"])
    assert character_set([ds], ["日本語"]) == ["", "ISO 2022 IR 87"]
    assert character_set([ds], ["한국어"]) == UTF8  # Hangul is not in JIS X 0208
