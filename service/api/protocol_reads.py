"""Request and response models of the study-read API (`/v1/dicom/reads`, docs/api.md).
The `dicom.read` object itself (`DicomRead`) is the read's own (`reads.model`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from service.api.protocol import DicomImageOptions, LaneName, StrictRequest, WindowSpec
from service.media.dicomweb import UID_MAX, UID_PATTERN
from service.reads.service import ReadOrder

Uid = Annotated[str, Field(pattern=UID_PATTERN, max_length=UID_MAX)]


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

    def order(self) -> ReadOrder:
        window = self.dicom.window if self.dicom else None
        return ReadOrder(
            model=self.model,
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid,
            sop_instance_uids=self.sop_instance_uids,
            pacs=self.pacs,
            prompt=self.prompt,
            window=window.model_dump() if isinstance(window, WindowSpec) else window,
            frames=self.dicom.frames if self.dicom else None,
            max_tokens=self.max_tokens,
            priority=self.priority,
            store=self.store,
            webhook=self.webhook,
        )
