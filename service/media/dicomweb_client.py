"""The one DICOMweb client of a configured PACS: QIDO-RS searches, WADO-RS instance
retrieval, STOW-RS storage. Every request goes through the gateway's `SafeFetcher`
(allow-list = the PACS host, address checks, timeouts, byte cap) with the PACS's
own credentials (`Pacs.get`); every UID is checked by the one UID rule
(`dicomweb.check_uid`) before it becomes a path segment.

Callers choose how failures surface, with the `Failures` the client is built
with (`with_failures` gives a copy with others):
- `BROWSE` (console searches): the caller's request could not be served, 400
  `pacs_search_failed` (`errors.ImageFetchFailed`).
- `READ` (study reads): the PACS failed the read, 502 `errors.PacsError` with
  `pacs_unavailable` (no answer), `pacs_error` (an HTTP error or an unusable
  answer); a STOW-RS refusal is always `sr_store_failed`.
A bad UID is always 400 `invalid_uid`, and an instance over the byte limit keeps
its own error. Messages name the PACS, never a UID, a path or a filter value.

Search answers come in two forms: summaries for a picker (`search_*`: a few
fields per match, no patient names or birth dates) and the typed series and
instances a read selects from (`series`, `instances`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from service import errors
from service.media.dicomweb import Pacs, check_uid, fetch_instance, valid_uid
from service.media.fetch import SafeFetcher

QIDO_ACCEPT = "application/dicom+json"
# "" admits a 204 (some PACS answer an empty search with no body).
QIDO_TYPES = frozenset({"application/dicom+json", "application/json", ""})
STOW_TYPES = frozenset({"application/dicom+json", "application/json"})
FAILED_SOP_SEQUENCE = "00081198"
RETRIEVING = "retrieving an instance"

# Forwarded study filters and the shapes they may take (DICOM DA ranges, CS codes, ...).
_DATE = r"\d{8}"
STUDY_FILTERS: dict[str, re.Pattern[str]] = {
    "StudyDate": re.compile(rf"^({_DATE}|{_DATE}-|-{_DATE}|{_DATE}-{_DATE})$"),
    "ModalitiesInStudy": re.compile(r"^[A-Z0-9]{1,16}$"),
    "AccessionNumber": re.compile(r"^[A-Za-z0-9._\-]{1,16}$"),
}
MAX_LIMIT = 200

# Tags of the DICOM JSON model (PS3.18 F.2) -> the summary's field names.
_STUDY_FIELDS = {
    "0020000D": "study_instance_uid",
    "00080020": "study_date",
    "00080030": "study_time",
    "00081030": "description",
    "00080050": "accession_number",
    "00080061": "modalities",
    "00201206": "series_count",
    "00201208": "instance_count",
}
_SERIES_FIELDS = {
    "0020000E": "series_instance_uid",
    "00080060": "modality",
    "00200011": "series_number",
    "0008103E": "description",
    "00201209": "instance_count",
}
_INSTANCE_FIELDS = {
    "00080018": "sop_instance_uid",
    "00080016": "sop_class_uid",
    "00200013": "instance_number",
    "00280008": "number_of_frames",
    "00280010": "rows",
    "00280011": "columns",
}
_INCLUDE = {
    "studies": ("00081030", "00201206", "00201208", "00080061"),
    "series": ("0008103E", "00201209"),
    "instances": ("00280008", "00280010", "00280011"),
}

Cause = Literal["unreachable", "http_error", "bad_answer", "too_large"]


class Failures(Protocol):
    """How a failed exchange with the PACS surfaces to the caller."""

    def __call__(
        self, pacs: str, stage: str, cause: Cause, status: int | None
    ) -> errors.ServiceError: ...


def browse_failure(pacs: str, stage: str, cause: Cause, status: int | None) -> errors.ServiceError:
    """A console search: the request could not be served (400 `pacs_search_failed`)."""
    if cause == "bad_answer":
        message = f"The PACS {pacs!r} answered the search with something other than DICOM JSON."
    else:
        message = f"The PACS {pacs!r} could not be searched."
    return errors.ImageFetchFailed(message, param="pacs", code="pacs_search_failed")


def read_failure(pacs: str, stage: str, cause: Cause, status: int | None) -> errors.ServiceError:
    """A study read: the PACS failed it (502, `pacs_unavailable` or `pacs_error`)."""
    if cause == "unreachable":
        return errors.PacsError(f"PACS {pacs!r} is unreachable {stage}.", code="pacs_unavailable")
    if cause == "http_error":
        return errors.PacsError(f"PACS {pacs!r} answered HTTP {status} {stage}.", code="pacs_error")
    return errors.PacsError(f"PACS {pacs!r} sent an unusable answer {stage}.", code="pacs_error")


BROWSE: Failures = browse_failure
READ: Failures = read_failure


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


def attribute(item: Mapping[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class DicomWebClient:
    pacs: Pacs
    fetcher: SafeFetcher
    failures: Failures = BROWSE

    @property
    def name(self) -> str:
        return self.pacs.name

    def with_failures(self, failures: Failures) -> DicomWebClient:
        return dataclasses.replace(self, failures=failures)

    def url(self, *segments: str, **query: str) -> httpx.URL:
        """`{base}/studies/{study}/series/...`: every second segment is a UID, checked."""
        names = ("study", "series", "instance")
        for index, segment in enumerate(segments[1::2]):
            check_uid(segment, names[min(index, 2)])
        path = self.pacs.base.path.rstrip("/") + "/" + "/".join(segments)
        return self.pacs.base.copy_with(path=path, params=query or None)

    @contextlib.contextmanager
    def _failing(self, stage: str) -> Iterator[None]:
        """Foreign fetch errors -> the caller's chosen failures."""
        try:
            yield
        except errors.ImageTooLarge as exc:
            if stage == RETRIEVING:
                raise  # an instance over the byte limit: ours to name (413)
            raise self.failures(self.name, stage, "too_large", None) from exc
        except errors.ImageFetchFailed as exc:
            status = exc.upstream_status
            cause: Cause = "unreachable" if status is None else "http_error"
            raise self.failures(self.name, stage, cause, status) from exc
        except (errors.InvalidRequest, errors.UnprocessableImage) as exc:
            if exc.code == "invalid_uid":
                raise  # ours to name
            raise self.failures(self.name, stage, "bad_answer", None) from exc

    async def _search(self, url: httpx.URL, stage: str) -> list[dict[str, Any]]:
        """QIDO-RS `GET url`: the matches (DICOM JSON objects)."""
        with self._failing(stage):
            fetched = await self.pacs.get(self.fetcher, url, QIDO_ACCEPT, QIDO_TYPES, "pacs")
        if not fetched.body.strip():
            return []
        try:
            found = json.loads(fetched.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.failures(self.name, stage, "bad_answer", None) from exc
        if not isinstance(found, list) or not all(isinstance(m, dict) for m in found):
            raise self.failures(self.name, stage, "bad_answer", None)
        return found

    # summaries for a picker (the console's browsing)

    async def search_studies(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        return await self._summaries(self.url("studies"), query, "studies")

    async def search_series(self, study: str) -> list[dict[str, Any]]:
        return await self._summaries(self.url("studies", study, "series"), {}, "series")

    async def search_instances(self, study: str, series: str) -> list[dict[str, Any]]:
        """The series' instances, each with the WADO-RS `url` a chat image part takes."""
        url = self.url("studies", study, "series", series, "instances")
        found = await self._summaries(url, {}, "instances")
        for instance in found:
            uid = instance.get("sop_instance_uid")
            if isinstance(uid, str) and valid_uid(uid):
                path = ("studies", study, "series", series, "instances", uid)
                instance["url"] = str(self.url(*path))
        return found

    async def _summaries(
        self, url: httpx.URL, query: Mapping[str, str], level: str
    ) -> list[dict[str, Any]]:
        params = [*query.items(), *(("includefield", tag) for tag in _INCLUDE[level])]
        matches = await self._search(url.copy_merge_params(params), "searching")
        fields = {"studies": _STUDY_FIELDS, "series": _SERIES_FIELDS, "instances": _INSTANCE_FIELDS}
        return [summarize(match, fields[level]) for match in matches]

    # what a read selects from

    async def study_exists(self, study: str) -> bool:
        if not valid_uid(study):
            return False
        url = self.url("studies", StudyInstanceUID=study)
        return bool(await self._search(url, "searching for the study"))

    async def series(self, study: str) -> list[SeriesInfo]:
        items = await self._search(self.url("studies", study, "series"), "listing series")
        out = []
        for item in items:
            uid = attribute(item, "0020000E")
            if isinstance(uid, str) and valid_uid(uid):
                modality = str(attribute(item, "00080060") or "").upper()
                out.append(SeriesInfo(uid, modality, _number(attribute(item, "00200011"))))
        return out

    async def instances(self, study: str, series: str) -> list[InstanceInfo]:
        url = self.url("studies", study, "series", series, "instances")
        out = []
        for item in await self._search(url, "listing instances"):
            uid, sop_class = attribute(item, "00080018"), attribute(item, "00080016")
            if isinstance(uid, str) and valid_uid(uid):
                number = _number(attribute(item, "00200013"))
                out.append(InstanceInfo(uid, str(sop_class or ""), number))
        return out

    async def retrieve(self, study: str, series: str, instance: str) -> bytes:
        url = self.url("studies", study, "series", series, "instances", instance)
        with self._failing(RETRIEVING):
            return await fetch_instance(self.fetcher, self.pacs, url, "pacs")

    async def store(self, dicom: bytes) -> None:
        """STOW-RS one Part 10 file into the PACS (POST {base}/studies)."""
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + dicom
            + f"\r\n--{boundary}--\r\n".encode()
        )
        with self._failing("storing the report"):
            posted = await self.fetcher.post(
                str(self.url("studies")),
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


def study_query(filters: Mapping[str, str | None], limit: int, offset: int) -> dict[str, str]:
    """The QIDO query for a study search, every value checked (400 names the field)."""
    query: dict[str, str] = {}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        pattern = STUDY_FILTERS.get(name)
        if pattern is None:
            raise errors.InvalidRequest(
                f"Unknown filter {name[:40]!r}.", param=name, code="invalid_filter"
            )
        if not pattern.match(value):
            raise errors.InvalidRequest(
                f"{name} has the wrong form (dates are YYYYMMDD or YYYYMMDD-YYYYMMDD, "
                "modalities a code such as CT).",
                param=name,
                code="invalid_filter",
            )
        query[name] = value
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise errors.InvalidRequest(
            f"limit is 1..{MAX_LIMIT} and offset at least 0.", param="limit", code="invalid_filter"
        )
    query["limit"], query["offset"] = str(limit), str(offset)
    return query


def summarize(match: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """The first value of each wanted tag (all values for multi-valued ones); absent: None."""
    out: dict[str, Any] = {}
    for tag, name in fields.items():
        element = match.get(tag)
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list) or not values:
            out[name] = [] if name == "modalities" else None
        elif name == "modalities":
            out[name] = [str(v) for v in values if isinstance(v, str | int)]
        else:
            value = values[0]
            out[name] = value if isinstance(value, str | int | float) else None
    return out
