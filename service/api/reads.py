"""Routes of the study-read API: thin. Parse, hand to `reads.service.ReadService`,
shape the answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service import errors
from service.api.context import context_of
from service.api.protocol import ErrorBody
from service.api.protocol_reads import ReadRequest
from service.reads.model import DicomRead
from service.reads.service import ReadService

router = APIRouter()

READS = "/v1/dicom/reads"


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _reads(request: Request) -> ReadService:
    reads = request.app.state.gmaivl.reads
    if reads is None:
        raise errors.NotFound("Study reads are not enabled here.", code="reads_disabled")
    return reads


@router.post(
    READS,
    status_code=202,
    responses={
        202: {"model": DicomRead, "description": "Accepted; `Location` names the read."},
        **_errors(400, 401, 403, 404, 413, 429, 502, 503),
    },
)
async def create_read(body: ReadRequest, request: Request) -> JSONResponse:
    read = await _reads(request).submit(body.order(), context_of(request))
    return JSONResponse(read.public(), status_code=202, headers={"Location": f"{READS}/{read.id}"})


@router.get(READS + "/{read_id}", responses={200: {"model": DicomRead}, **_errors(401, 404)})
async def get_read(read_id: str, request: Request) -> JSONResponse:
    read = await _reads(request).get(read_id, context_of(request).principal)
    return JSONResponse(read.public())


@router.get(
    READS + "/{read_id}/sr",
    response_class=Response,
    responses={
        200: {"content": {"application/dicom": {"schema": {"type": "string"}}}},
        **_errors(401, 404),
    },
)
async def get_read_sr(read_id: str, request: Request) -> Response:
    data = await _reads(request).sr(read_id, context_of(request).principal)
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{read_id}.dcm"'},
    )


@router.delete(READS + "/{read_id}", responses={200: {"model": DicomRead}, **_errors(401, 404)})
async def cancel_read(read_id: str, request: Request) -> JSONResponse:
    ctx = context_of(request)
    read = await _reads(request).cancel(read_id, ctx.principal, ctx.request_id)
    return JSONResponse(read.public())
