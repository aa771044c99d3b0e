"""Audit events: one JSON line per audited request, to a configurable sink.

An event says who (tenant, and the key id or, for a user signed in at the hospital's
IdP, the token's `sub` and `iss`: filled by authentication when it exists),
when, which route and model, the request id, a SHA-256 of each SOP Instance
UID the request showed the model, the outcome (`ok` or the error code), the
HTTP status and the latency. Never a prompt, an answer, an image, a URL, a
DICOM header value or a client-chosen string other than the sanitized request id.

The middleware creates the event when a request arrives and writes it when the
response has been sent; the layers in between fill in what they learn.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Protocol


@dataclass
class AuditEvent:
    request_id: str
    route: str
    time: float = field(default_factory=time.time)  # arrival, Unix seconds
    model: str | None = None  # as the response's `model`; None: refused before it was looked up
    parent: str | None = None  # the base model when `model` is a LoRA adapter
    tenant: str | None = None
    key_id: str | None = None
    sub: str | None = None  # the user, when an IdP's access token authenticated the request
    iss: str | None = None  # the IdP that names them (sub is unique within it)
    sop_instance_uid_sha256: list[str] = field(default_factory=list)
    images: int = 0
    outcome: str = "ok"
    status: int | None = None
    latency_ms: float | None = None
    trace_id: str | None = None  # when tracing is on: the request's trace (docs/operations.md)

    def note_sop_instance_uid(self, uid: str) -> None:
        self.sop_instance_uid_sha256.append(hash_uid(uid))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)


@dataclass
class ReadAuditEvent(AuditEvent):
    """The one event of a study read, written when it ends: the study and the instances
    shown (hashed), the outcome, the latency from submission, the webhook's delivery."""

    read_id: str | None = None
    study_instance_uid_sha256: str | None = None
    webhook: str | None = None  # delivered | failed | None (no webhook)


def hash_uid(uid: str) -> str:
    """A stable pseudonym: an auditor holding the UID can find its events; the log alone
    does not reveal it."""
    return hashlib.sha256(uid.strip().encode("ascii", "replace")).hexdigest()


class AuditSink(Protocol):
    def write(self, event: AuditEvent) -> None: ...

    def close(self) -> None: ...


class JsonLinesAuditSink:
    """Appends one line per event and flushes it (an audit trail must survive a crash).
    Writes are serialized: gateway threads and the event loop may share it."""

    def __init__(self, stream: IO[str], owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()

    def write(self, event: AuditEvent) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def open_audit_sink(target: str | None) -> AuditSink | None:
    """`None`: no audit; `-`: stdout; anything else: a file appended to."""
    if target is None or target == "":
        return None
    if target == "-":
        return JsonLinesAuditSink(sys.stdout, owned=False)
    return JsonLinesAuditSink(open(target, "a", encoding="utf-8"), owned=True)
