"""A study read: its statuses (defined here once), what was asked (`ReadSpec`), its
record (`Read`), and the `dicom.read` object clients see (`DicomRead`, the one
model both the API's answers and its OpenAPI document use)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel


class ReadStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[ReadStatus] = frozenset(
    {ReadStatus.COMPLETED, ReadStatus.FAILED, ReadStatus.CANCELLED}
)
ACTIVE: frozenset[ReadStatus] = frozenset(ReadStatus) - TERMINAL


def new_read_id() -> str:
    return "read_" + uuid.uuid4().hex


class ReadSR(BaseModel):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    stored: bool


class RequestedBy(BaseModel):
    """The user who started a read with an access token from the IdP (`sub` is unique
    within `iss`); null for a read started with an API key."""

    sub: str
    iss: str


class ReadError(BaseModel):
    code: str
    message: str


class DicomRead(BaseModel):
    """The `dicom.read` object (docs/api.md)."""

    id: str
    object: Literal["dicom.read"] = "dicom.read"
    source: Literal["dicomweb", "dimse"] = "dicomweb"
    calling_ae: str | None = None  # dimse: the AE title that sent the study
    status: ReadStatus
    created: int
    model: str
    study_instance_uid: str
    instances: list[str]
    answer: str | None = None
    usage: dict[str, Any] | None = None
    sr: ReadSR | None = None
    error: ReadError | None = None
    requested_by: RequestedBy | None = None


@dataclass
class ReadSpec:
    """What the client asked for (kept so another gateway can run the read again)."""

    pacs: str | None = None  # dicomweb: where the study is; dimse: a STOW-RS destination
    series_instance_uid: str | None = None
    sop_instance_uids: list[str] | None = None
    prompt: str | None = None
    window: Any = None  # a preset name or {center, width, function}
    frames: list[int] | None = None
    max_tokens: int = 256
    max_images: int = 4  # the server's and the tenant's image limit, the lower
    lane: str = "routine"
    timeout: float = 120.0
    store: bool = True
    webhook: str | None = None
    source: str = "dicomweb"  # or "dimse": received by the DICOM node
    calling_ae: str | None = None
    files: list[str] | None = None  # dimse: the chosen instances' files in the node's spool
    send_to: dict[str, Any] | None = None  # dimse: {ae_title, host, port} or {pacs}
    response_format: dict[str, Any] | None = None  # OpenAI shape (json_schema)


@dataclass
class Read:
    id: str
    model: str
    study_instance_uid: str
    spec: ReadSpec
    status: ReadStatus = ReadStatus.QUEUED
    created: int = field(default_factory=lambda: int(time.time()))
    tenant: str | None = None
    key_id: str | None = None
    requested_by: dict[str, str] | None = None  # {"sub", "iss"}: a user's token started it
    instances: list[str] = field(default_factory=list)
    answer: str | None = None
    usage: dict[str, int] | None = None
    sr: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    owner: str | None = None  # the gateway running it
    job_id: str | None = None  # its generation job, while one exists

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def fail(self, code: str, message: str) -> None:
        self.status, self.error = ReadStatus.FAILED, {"code": code, "message": message}

    def public(self) -> dict[str, Any]:
        """The `dicom.read` object clients see, built from `DicomRead`."""
        return DicomRead(
            id=self.id,
            source="dimse" if self.spec.source == "dimse" else "dicomweb",
            calling_ae=self.spec.calling_ae,
            status=self.status,
            created=self.created,
            model=self.model,
            study_instance_uid=self.study_instance_uid,
            instances=list(self.instances),
            answer=self.answer,
            usage=self.usage,
            sr=ReadSR(**self.sr) if self.sr is not None else None,
            error=ReadError(**self.error) if self.error is not None else None,
            requested_by=RequestedBy(**self.requested_by) if self.requested_by else None,
        ).model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Read:
        data = json.loads(raw)
        data["spec"] = ReadSpec(**data["spec"])
        data["status"] = ReadStatus(data["status"])
        return cls(**data)
