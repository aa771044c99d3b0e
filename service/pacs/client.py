"""One configured PACS over DICOMweb, as a study read needs it: QIDO-RS searches,
WADO-RS instance retrieval, STOW-RS storage. Every request goes through the
gateway's `SafeFetcher` (allow-list = the PACS host, address checks, timeouts,
byte cap) with the PACS's own credentials.

Errors come out as `errors.PacsError` with a code (`pacs_unavailable`: no answer;
`pacs_error`: an HTTP error; `sr_store_failed`: STOW-RS refused the SR) and a
message that names the PACS, never a UID or a path.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from service import errors
from service.config import PacsEntry
from service.media.dicomweb import Pacs, fetch_instance
from service.media.fetch import SafeFetcher

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
_UID = re.compile(UID_PATTERN)
QIDO_ACCEPT = "application/dicom+json"
# "" admits a 204 (some PACS answer an empty search with no body).
QIDO_TYPES = frozenset({"application/dicom+json", "application/json", ""})
STOW_TYPES = frozenset({"application/dicom+json", "application/json"})
FAILED_SOP_SEQUENCE = "00081198"


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    modality: str
    series_number: int | None


@dataclass(frozen=True)
class InstanceInfo:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None


def valid_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.match(value) is not None


def attribute(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class PacsClient:
    def __init__(self, entry: PacsEntry, fetcher: SafeFetcher) -> None:
        self.pacs = Pacs.from_entry(entry)
        self.name = entry.name
        self.fetcher = fetcher

    def _url(self, *segments: str, **query: str) -> httpx.URL:
        for segment in segments[1::2]:
            if not valid_uid(segment):  # UIDs are checked before they become a path
                raise errors.InvalidRequest("A UID is not a valid DICOM UID.", code="invalid_uid")
        path = self.pacs.base.path.rstrip("/") + "/" + "/".join(segments)
        return self.pacs.base.copy_with(path=path, params=query or None)

    @contextlib.contextmanager
    def _errors(self, stage: str) -> Iterator[None]:
        try:
            yield
        except errors.ImageFetchFailed as exc:
            if exc.upstream_status is not None:
                raise errors.PacsError(
                    f"PACS {self.name!r} answered HTTP {exc.upstream_status} {stage}.",
                    code="pacs_error",
                ) from exc
            raise errors.PacsError(
                f"PACS {self.name!r} is unreachable {stage}.", code="pacs_unavailable"
            ) from exc
        except (errors.InvalidRequest, errors.UnprocessableImage) as exc:
            if exc.code in ("invalid_uid", "image_too_large"):
                raise  # ours to name: a bad UID, an instance over the byte limit
            raise errors.PacsError(
                f"PACS {self.name!r} sent an unusable answer {stage}.", code="pacs_error"
            ) from exc

    async def _search(self, url: httpx.URL, stage: str) -> list[dict[str, Any]]:
        with self._errors(stage):
            fetched = await self.pacs.get(self.fetcher, url, QIDO_ACCEPT, QIDO_TYPES, "pacs")
        if not fetched.body.strip():
            return []
        try:
            found = json.loads(fetched.body)
        except ValueError as exc:
            raise errors.PacsError(
                f"PACS {self.name!r} sent invalid JSON {stage}.", code="pacs_error"
            ) from exc
        return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []

    async def study_exists(self, study: str) -> bool:
        if not valid_uid(study):
            return False
        url = self._url("studies", StudyInstanceUID=study)
        return bool(await self._search(url, "searching for the study"))

    async def series(self, study: str) -> list[SeriesInfo]:
        items = await self._search(self._url("studies", study, "series"), "listing series")
        out = []
        for item in items:
            uid = attribute(item, "0020000E")
            if isinstance(uid, str) and valid_uid(uid):
                number = attribute(item, "00200011")
                out.append(
                    SeriesInfo(
                        uid,
                        str(attribute(item, "00080060") or "").upper(),
                        int(number) if isinstance(number, int | float) else None,
                    )
                )
        return out

    async def instances(self, study: str, series: str) -> list[InstanceInfo]:
        url = self._url("studies", study, "series", series, "instances")
        out = []
        for item in await self._search(url, "listing instances"):
            uid, sop_class = attribute(item, "00080018"), attribute(item, "00080016")
            if isinstance(uid, str) and valid_uid(uid):
                number = attribute(item, "00200013")
                out.append(
                    InstanceInfo(
                        uid,
                        str(sop_class or ""),
                        int(number) if isinstance(number, int | float) else None,
                    )
                )
        return out

    async def retrieve(self, study: str, series: str, instance: str) -> bytes:
        url = self._url("studies", study, "series", series, "instances", instance)
        with self._errors("retrieving an instance"):
            return await fetch_instance(self.fetcher, self.pacs, url, "pacs")

    async def store(self, dicom: bytes) -> None:
        """STOW-RS one Part 10 file into the PACS (POST {base}/studies)."""
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + dicom
            + f"\r\n--{boundary}--\r\n".encode()
        )
        with self._errors("storing the report"):
            posted = await self.fetcher.post(
                str(self._url("studies")),
                policy=self.pacs.policy,
                content=body,
                content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
                headers=self.pacs.headers,
                accept="application/dicom+json",
                param="pacs",
            )
        failed = posted.status_code not in (200, 202)
        if not failed and posted.body.strip():
            with contextlib.suppress(ValueError):
                answer = json.loads(posted.body)
                if isinstance(answer, dict):
                    failed = bool(answer.get(FAILED_SOP_SEQUENCE, {}).get("Value"))
        if failed:
            raise errors.PacsError(
                f"PACS {self.name!r} did not store the report (HTTP {posted.status_code}).",
                code="sr_store_failed",
            )
