"""Browsing a configured PACS through the gateway (QIDO-RS, `media/dicomweb_client.py`
with its `BROWSE` failures: 400 `pacs_search_failed`): the
console's study search, series and instances, under the same key as `/v1` and
only ever to PACS entries of the configuration.

    GET /v1/dicom/pacs                                          configured PACS (name, base URL)
    GET /v1/dicom/studies?pacs=&StudyDate=&ModalitiesInStudy=   studies
    GET /v1/dicom/studies/{study}/series?pacs=                  a study's series
    GET /v1/dicom/studies/{study}/series/{series}/instances     a series' instances, with the
                                                                WADO-RS URL a chat part takes
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from service import errors
from service.api.protocol import ErrorBody
from service.api.state import AppState
from service.media.dicomweb_client import DicomWebClient, study_query

router = APIRouter()

RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404)
}
PACS_HELP = "A configured PACS's name; may be omitted when exactly one is configured."


def _pacs(state: AppState, name: str | None) -> DicomWebClient:
    configured = list(state.dicomweb.values())
    if not configured:
        raise errors.InvalidRequest(
            "No PACS is configured on this gateway.", param="pacs", code="pacs_not_configured"
        )
    if name is None:
        if len(configured) > 1:
            raise errors.InvalidRequest(
                "Several PACS are configured; name one with `pacs`.",
                param="pacs",
                code="pacs_required",
            )
        return configured[0]
    for pacs in configured:
        if pacs.name == name:
            return pacs
    raise errors.InvalidRequest(
        "No PACS of that name is configured.", param="pacs", code="unknown_pacs"
    )


def _state(request: Request) -> AppState:
    return request.app.state.gmaivl


@router.get("/v1/dicom/pacs", responses=RESPONSES)
async def list_pacs(request: Request) -> dict[str, Any]:
    """The configured PACS: names and DICOMweb roots (never credentials)."""
    return {
        "object": "list",
        "data": [
            {"name": c.name, "base_url": str(c.pacs.base)}
            for c in _state(request).dicomweb.values()
        ],
    }


@router.get("/v1/dicom/studies", responses=RESPONSES)
async def search_studies(
    request: Request,
    pacs: str | None = Query(None, description=PACS_HELP),
    StudyDate: str | None = Query(None, description="YYYYMMDD or a range YYYYMMDD-YYYYMMDD"),
    ModalitiesInStudy: str | None = Query(None, description="A modality code, e.g. CT"),
    AccessionNumber: str | None = Query(None),
    limit: int = Query(50, description="1..200"),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    target = _pacs(_state(request), pacs)
    query = study_query(
        {
            "StudyDate": StudyDate,
            "ModalitiesInStudy": ModalitiesInStudy,
            "AccessionNumber": AccessionNumber,
        },
        limit,
        offset,
    )
    found = await target.search_studies(query)
    return {"object": "list", "pacs": target.name, "data": found}


@router.get("/v1/dicom/studies/{study}/series", responses=RESPONSES)
async def list_series(
    request: Request, study: str, pacs: str | None = Query(None, description=PACS_HELP)
) -> dict[str, Any]:
    target = _pacs(_state(request), pacs)
    found = await target.search_series(study)
    return {"object": "list", "pacs": target.name, "data": found}


@router.get("/v1/dicom/studies/{study}/series/{series}/instances", responses=RESPONSES)
async def list_instances(
    request: Request,
    study: str,
    series: str,
    pacs: str | None = Query(None, description=PACS_HELP),
) -> dict[str, Any]:
    target = _pacs(_state(request), pacs)
    found = await target.search_instances(study, series)
    found.sort(key=lambda i: i["instance_number"] if isinstance(i["instance_number"], int) else 0)
    return {"object": "list", "pacs": target.name, "data": found}
