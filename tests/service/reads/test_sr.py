"""The Structured Report: what a PACS and a viewer read from it, checked with pydicom
and highdicom on pydicom's own test files (dciodvfy and dsrdump: test_sr_validators.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service import __version__
from service.reads.sr import EMPTY, UTF8, build_sr, character_set, report_sections, source_header

ANSWER_ZH = "未见急性异常。No acute abnormality."


def header(name: str, **changes):
    ds = source_header(Path(get_testdata_file(name)).read_bytes())
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def built(sources, question="Findings?", answer=ANSWER_ZH):
    result = build_sr(sources, question, answer, "gmai-vl-7b", "2.1")
    return result, dcmread(io.BytesIO(result.data))


def meaning(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning


def code(item) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return concept.CodeValue, concept.CodingSchemeDesignator


def section(ds, name: str):
    """The root's section container named `name`."""
    (found,) = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER" and meaning(i) == name]
    return found


def section_texts(ds, name: str) -> list[str]:
    return [i.TextValue for i in section(ds, name).ContentSequence if i.ValueType == "TEXT"]


def all_texts(ds) -> list[str]:
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.append(item.TextValue)
        found += all_texts(item)
    return found


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


def test_a_basic_diagnostic_imaging_report_with_sections_shown_item_by_item():
    """TID 2000: the root SEPARATE (a viewer puts each item on its own line, never one
    run-on paragraph), sections coded with LOINC (CID 7001)."""
    _, ds = built([header("CT_small.dcm")], question="Any fracture?")
    template = ds.ContentTemplateSequence[0]
    assert (template.TemplateIdentifier, template.MappingResource) == ("2000", "DCMR")
    assert ds.ContinuityOfContent == "SEPARATE"
    sections = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER"]
    assert [(meaning(i), code(i)) for i in sections] == [
        ("Request", ("55115-0", "LN")),
        ("Findings", ("59776-5", "LN")),
    ]
    # A one-narrative Findings section is a paragraph (OHIF wraps it, see sr.py).
    assert [i.ContinuityOfContent for i in sections] == ["SEPARATE", "CONTINUOUS"]
    assert {i.RelationshipType for i in sections} == {"CONTAINS"}
    (question,) = section(ds, "Request").ContentSequence
    assert (meaning(question), question.TextValue) == ("Request", "Any fracture?")
    (finding,) = section(ds, "Findings").ContentSequence
    assert (meaning(finding), code(finding)) == ("Finding", ("121071", "DCM"))
    assert finding.TextValue == ANSWER_ZH  # exactly as generated, alone in its item


def test_the_model_is_the_device_observer_and_stays_out_of_the_findings():
    _, ds = built([header("CT_small.dcm")])
    context = {meaning(i): i for i in ds.ContentSequence if i.RelationshipType == "HAS OBS CONTEXT"}
    assert context["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert context["Device Observer Name"].TextValue == "gmai-vl-7b"
    assert context["Device Observer Model Name"].TextValue == "gmai-vl-7b 2.1"
    assert context["Device Observer Manufacturer"].TextValue == "GMAI-VL"
    finding = section(ds, "Findings").ContentSequence[0]
    modifiers = [i for i in finding.ContentSequence if i.RelationshipType == "HAS CONCEPT MOD"]
    algorithm = {meaning(i): i.TextValue for i in modifiers}
    assert algorithm == {"Algorithm Name": "gmai-vl-7b", "Algorithm Version": "2.1",
                         "Algorithm Manufacturer": "GMAI-VL"}  # fmt: skip
    for text in section_texts(ds, "Findings"):
        assert "gmai-vl-7b" not in text and "GMAI-VL" not in text


def test_the_not_for_diagnostic_use_statement_is_in_the_document():
    _, ds = built([header("CT_small.dcm")])
    (notice,) = [
        i for i in ds.ContentSequence if i.ValueType == "TEXT" and i.RelationshipType == "CONTAINS"
    ]
    assert (meaning(notice), code(notice)) == ("Comment", ("121106", "DCM"))
    assert "not for diagnostic use" in notice.TextValue
    assert "gmai-vl-7b 2.1" in notice.TextValue and "unverified" in notice.TextValue


def test_a_structured_answer_fills_findings_and_impressions():
    answer = json.dumps(
        {"findings": ["No fracture.", "未见出血。"], "impression": "Normal study.", "score": 2},
        ensure_ascii=False,
    )
    _, ds = built([header("CT_small.dcm")], answer=answer)
    sections = [meaning(i) for i in ds.ContentSequence if i.ValueType == "CONTAINER"]
    assert sections == ["Request", "Findings", "Impressions"]
    assert code(section(ds, "Impressions")) == ("19005-8", "LN")
    assert {section(ds, name).ContinuityOfContent for name in sections} == {"SEPARATE"}
    assert section_texts(ds, "Findings") == ["No fracture.", "未见出血。", "score: 2"]
    (impression,) = section(ds, "Impressions").ContentSequence
    assert (meaning(impression), code(impression)) == ("Impression", ("121073", "DCM"))
    assert impression.TextValue == "Normal study."
    assert answer not in all_texts(ds)  # each part in its place, not the raw JSON


@pytest.mark.parametrize(
    ("answer", "findings", "impressions"),
    [
        ("No acute abnormality.", ["No acute abnormality."], []),
        ('{"impression": "Normal."}', [], ["Normal."]),
        ('{"findings": "A", "impression": ["B", "C"]}', ["A"], ["B", "C"]),
        ('{"result": "no structured keys"}', ['{"result": "no structured keys"}'], []),
        ('["findings", "impression"]', ['["findings", "impression"]'], []),
        ('{"findings": "", "impression": null}', [EMPTY], []),
        ("", [EMPTY], []),
        ("[" * 100_000, ["[" * 100_000], []),  # nested past json's limit: free text
    ],
)
def test_report_sections_of_free_text_and_structured_answers(answer, findings, impressions):
    sections = report_sections(answer)
    assert (sections.findings, sections.impressions) == (findings, impressions)


def test_references_and_evidence_name_every_source_image():
    ct, mr = header("CT_small.dcm"), header("MR_small.dcm")
    mr.StudyInstanceUID = ct.StudyInstanceUID  # two series of one study
    _, ds = built([ct, mr])
    document = hd.sr.ComprehensiveSR.from_dataset(ds)
    assert [e[2] for e in document.get_evidence()] == [ct.SOPInstanceUID, mr.SOPInstanceUID]
    finding = section(ds, "Findings").ContentSequence[0]
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
    (text,) = section_texts(ds, "Findings")
    assert text == answer and "?" not in text


def test_character_set_keeps_a_multi_valued_source_when_it_fits():
    ds = header("CT_small.dcm", SpecificCharacterSet=["", "ISO 2022 IR 87"])
    assert character_set([ds], ["日本語"]) == ["", "ISO 2022 IR 87"]
    assert character_set([ds], ["한국어"]) == UTF8  # Hangul is not in JIS X 0208
