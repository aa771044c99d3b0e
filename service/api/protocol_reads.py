"""Request and response models of the study-read API (`/v1/dicom/reads`, docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.protocol import DicomImageOptions, LaneName, StrictRequest

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=64)]


class ReadRequest(StrictRequest):
    """Ask for an AI read of a study in a configured PACS; the answer comes back as a
    `dicom.read` object (poll or webhook) and as a DICOM SR stored into the study."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str = Field(max_length=256)
    study_instance_uid: Uid
    series_instance_uid: Uid | None = None
    sop_instance_uids: list[Uid] | None = Field(None, min_length=1, max_length=64)
    pacs: str | None = Field(None, max_length=128, description="Default: the only PACS.")
    prompt: str | None = Field(None, min_length=1, description="Default: a findings report.")
    dicom: DicomImageOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    priority: LaneName | None = None
    store: bool = Field(True, description="Store the SR into the PACS with STOW-RS.")
    webhook: str | None = Field(
        None, max_length=2048, description="POSTed the read object when it ends (signed)."
    )


class ReadSR(BaseModel):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    stored: bool


class ReadError(BaseModel):
    code: str
    message: str


class DicomRead(BaseModel):
    id: str
    object: Literal["dicom.read"] = "dicom.read"
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    created: int
    model: str
    study_instance_uid: str
    instances: list[str]
    answer: str | None = None
    usage: dict[str, Any] | None = None
    sr: ReadSR | None = None
    error: ReadError | None = None
