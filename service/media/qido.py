"""QIDO-RS searches of a configured PACS: studies, a study's series, a series'
instances, summarized to a few fields each.

Only the filters below are forwarded, each checked against its DICOM value
shape, so nothing a caller types reaches the PACS unvalidated. Requests go
through `SafeFetcher` to the PACS's own host with its credentials
(`Pacs.get`), like WADO-RS. Answers are reduced to the fields a picker needs;
patient names and birth dates are not among them. Messages name the PACS,
never a UID or a filter value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from service import errors
from service.media.dicomweb import Pacs
from service.media.fetch import SafeFetcher

QIDO_ACCEPT = "application/dicom+json"
QIDO_TYPES = frozenset({"application/dicom+json", "application/json"})

UID = re.compile(r"^[0-9.]{1,64}$")
# Forwarded filters and the shapes they may take (DICOM DA ranges, CS codes, ...).
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


def check_uid(value: str, param: str) -> str:
    if not UID.match(value):
        raise errors.InvalidRequest(
            "A DICOM UID is digits and dots, at most 64 characters.",
            param=param,
            code="invalid_uid",
        )
    return value


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


async def search(
    fetcher: SafeFetcher,
    pacs: Pacs,
    path: str,
    query: Mapping[str, str],
    level: str,
) -> list[dict[str, Any]]:
    """QIDO-RS `GET {base}{path}?query`: summaries of the matches (see the field maps)."""
    params = [*query.items(), *(("includefield", tag) for tag in _INCLUDE[level])]
    url = pacs.base.copy_with(path=pacs.base.path.rstrip("/") + path).copy_merge_params(params)
    try:
        fetched = await pacs.get(fetcher, url, QIDO_ACCEPT, QIDO_TYPES, param="pacs")
    except (errors.ImageFetchFailed, errors.ImageTooLarge) as exc:
        raise errors.ImageFetchFailed(
            f"The PACS {pacs.name!r} could not be searched.",
            param="pacs",
            code="pacs_search_failed",
        ) from exc
    except errors.InvalidRequest as exc:  # it answered something other than DICOM JSON
        raise _bad_answer(pacs) from exc
    try:
        matches = json.loads(fetched.body) if fetched.body.strip() else []
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_answer(pacs) from exc
    if not isinstance(matches, list) or not all(isinstance(m, dict) for m in matches):
        raise _bad_answer(pacs)
    fields = {"studies": _STUDY_FIELDS, "series": _SERIES_FIELDS, "instances": _INSTANCE_FIELDS}
    return [summarize(match, fields[level]) for match in matches]


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


def _bad_answer(pacs: Pacs) -> errors.ImageFetchFailed:
    return errors.ImageFetchFailed(
        f"The PACS {pacs.name!r} answered the search with something other than DICOM JSON.",
        param="pacs",
        code="pacs_search_failed",
    )
