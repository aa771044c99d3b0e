"""The read's answer as a DICOM Comprehensive SR, built with highdicom.

Content tree (TID 2000-like):

    CONTAINER Diagnostic Imaging Report (LOINC 18748-4)
      HAS OBS CONTEXT  observer device: the model (name, version) as algorithm
      CONTAINS TEXT    Request (DCM 121062): the question asked
      CONTAINS TEXT    Finding (DCM 121071): the answer, exactly as generated
        HAS CONCEPT MOD  Algorithm Name / Version / Manufacturer (TID 4019): the model
        INFERRED FROM IMAGE  Source Image (DCM 121324), one per instance shown

The document is UNVERIFIED and PRELIMINARY, in a new series whose description
says it is AI-generated and not for diagnostic use; Contributing Equipment names
this software; patient and study modules are copied from the first source so the
PACS files it in the same study. Text is kept exactly: when the source's character
set cannot encode it (GMAI-VL answers in English and Chinese), the SR is UTF-8
(ISO_IR 192) rather than letting characters turn into `?`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.charset import convert_encodings
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from service import __version__

# highdicom logs dataset UIDs and attribute values while it copies modules (PHI).
logging.getLogger("highdicom").setLevel(logging.ERROR)

REPORT = ("18748-4", "LN", "Diagnostic Imaging Report")
REQUEST = ("121062", "DCM", "Request")
FINDING = ("121071", "DCM", "Finding")
SOURCE_IMAGE = ("121324", "DCM", "Source Image")
SERIES_DESCRIPTION = "AI-generated report (GMAI-VL), not for diagnostic use"
SERIES_NUMBER = 9901
MANUFACTURER = "GMAI-VL"
UTF8 = "ISO_IR 192"


@dataclass(frozen=True)
class BuiltSR:
    data: bytes  # Part 10
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


def source_header(dicom: bytes) -> Dataset:
    """A source instance's header (no pixels): what the SR copies and references."""
    return dcmread(io.BytesIO(dicom), stop_before_pixels=True)


def character_set(sources: list[Dataset], texts: list[str]) -> str | list[str] | None:
    """The source's Specific Character Set when it can encode every text (None: the
    default repertoire, ASCII), else UTF-8."""
    declared = sources[0].get("SpecificCharacterSet") or None
    multi = declared is not None and not isinstance(declared, str)  # a pydicom MultiValue
    names = list(declared) if multi else [declared or "ISO_IR 6"]
    try:
        encodings = convert_encodings(names)
    except LookupError:
        return UTF8

    def encodable(char: str) -> bool:
        for encoding in encodings:
            try:
                char.encode(encoding)
                return True
            except (UnicodeEncodeError, LookupError):
                continue
        return False

    if all(encodable(char) for text in texts for char in text):
        return list(declared) if multi else declared
    return UTF8


def build_sr(
    sources: list[Dataset],
    question: str,
    answer: str,
    model: str,
    model_version: str,
) -> BuiltSR:
    """The SR for `answer` to `question` about `sources` (headers of the instances shown).
    CPU work: call it in a thread."""
    # Imported here: highdicom takes ~0.2 s to import, and the gateway starts without it.
    import highdicom as hd
    from highdicom.sr import (
        AlgorithmIdentification,
        CodedConcept,
        ComprehensiveSR,
        ContainerContentItem,
        DeviceObserverIdentifyingAttributes,
        ImageContentItem,
        ObserverContext,
        TextContentItem,
    )

    device = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name=model,
            manufacturer_name=MANUFACTURER,
            model_name=f"{model} {model_version}"[:64],
        ),
    )
    root = ContainerContentItem(name=CodedConcept(*REPORT), template_id="2000")
    finding = TextContentItem(
        name=CodedConcept(*FINDING), value=answer, relationship_type="CONTAINS"
    )
    algorithm = AlgorithmIdentification(
        name=model[:64], version=model_version[:64], manufacturer=MANUFACTURER
    )
    finding.ContentSequence = [
        *algorithm,  # HAS CONCEPT MOD: which model, which version produced the finding
        *(
            ImageContentItem(
                name=CodedConcept(*SOURCE_IMAGE),
                referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
                relationship_type="INFERRED FROM",
            )
            for source in sources
        ),
    ]
    root.ContentSequence = [
        *device,
        TextContentItem(name=CodedConcept(*REQUEST), value=question, relationship_type="CONTAINS"),
        finding,
    ]
    series_uid, sop_uid = generate_uid(), generate_uid()
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name="gmai-vl serving",
        software_versions=__version__,
        contribution_description=f"AI read by {model} {model_version}"[:64],
    )
    sr = ComprehensiveSR(
        evidence=sources,
        content=root,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[equipment],
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=model[:64],
        software_versions=__version__,
        specific_character_set=character_set(sources, [question, answer, model]),
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return BuiltSR(buffer.getvalue(), str(sr.StudyInstanceUID), series_uid, sop_uid)
