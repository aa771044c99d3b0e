"""One image part of a request -> model-ready images, whatever the client sent:

    data:image/{png,jpeg,webp}     decoded here (images.py)
    data:application/dicom         dicom.py: frames, modality LUT, window
    http(s) under a PACS base URL  DICOMweb (dicomweb.py): instance or /rendered
    other http(s)                  fetched when the host is on GMAIVL_FETCH_ALLOWED_HOSTS

Network I/O is async (the event loop stays free); decoding is CPU work and runs
in a thread. A DICOM part may yield several images (the frames the client named).
Its `info` is the response's extension entry: which frames and window were used.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from service import errors, tracing
from service.config import FetchSettings, ImageLimits, PacsEntry
from service.core.generation import ImageInput
from service.media.dicom import DicomOptions, dicom_to_rgb
from service.media.dicomweb import Pacs, fetch_instance, fetch_rendered
from service.media.fetch import FetchLimits, HostPolicy, SafeFetcher, parse_url
from service.media.images import (
    DICOM_TYPE,
    RASTER_TYPES,
    decode_image,
    fit_array,
    parse_data_url,
)
from service.media.windowing import PRESETS

_PLAIN_ACCEPT = "image/png, image/jpeg, image/webp, application/dicom;q=0.9"
_PLAIN_TYPES = frozenset({*RASTER_TYPES, DICOM_TYPE})


@dataclass(frozen=True)
class ImageRequest:
    url: str
    dicom: DicomOptions | None
    param: str  # where the part is, e.g. messages[0].content[1]


@dataclass(frozen=True)
class ResolvedImage:
    images: list[ImageInput]
    info: dict[str, Any] | None = None  # DICOM only: frames and window used
    sop_instance_uid: str | None = field(default=None, repr=False)


def gateway_fetcher(limits: ImageLimits, fetch: FetchSettings) -> SafeFetcher:
    """The gateway's one `SafeFetcher` (one pooled client; the app builder makes it)."""
    return SafeFetcher(
        FetchLimits(
            max_bytes=limits.max_bytes,
            connect_timeout=fetch.connect_timeout,
            read_timeout=fetch.read_timeout,
            total_timeout=fetch.total_timeout,
            max_redirects=fetch.max_redirects,
        )
    )


class MediaResolver:
    """`fetcher`: the gateway's, handed in by the app builder (which closes it); without
    one the resolver makes and closes its own (tools and tests)."""

    def __init__(
        self,
        limits: ImageLimits,
        fetch: FetchSettings,
        pacs: list[PacsEntry],
        fetcher: SafeFetcher | None = None,
    ) -> None:
        self.limits = limits
        self.pacs = [Pacs.from_entry(entry) for entry in pacs]
        self.plain_policy = HostPolicy.of(fetch.allowed_hosts, fetch.allowed_networks)
        self._owns_fetcher = fetcher is None
        self.fetcher = fetcher or gateway_fetcher(limits, fetch)

    async def aclose(self) -> None:
        if self._owns_fetcher:
            await self.fetcher.aclose()

    async def resolve(self, request: ImageRequest) -> ResolvedImage:
        """One image part -> images; traced as `image.resolve` with `image.fetch` and
        `image.decode` children (attributes: source, sizes, counts; never the URL)."""
        with tracing.span("image.resolve") as span:
            return await self._resolve(request, span)

    async def _resolve(self, request: ImageRequest, span: Any) -> ResolvedImage:
        options = request.dicom or DicomOptions()
        if request.url.startswith("data:"):
            _note(span, "gmaivl.image.source", "data_url")
            mime, data = parse_data_url(request.url, self.limits, request.param)
            return await self.decode(mime, data, options, request.param)
        url = parse_url(request.url, request.param)
        pacs = next((p for p in self.pacs if p.owns(url)), None)
        if pacs is None:
            _note(span, "gmaivl.image.source", "url")
            with tracing.span("image.fetch"):
                fetched = await self.fetcher.fetch(
                    request.url,
                    policy=self.plain_policy,
                    accept=_PLAIN_ACCEPT,
                    content_types=_PLAIN_TYPES,
                    param=request.param,
                )
            mime, data = fetched.media_type, fetched.body
        elif pacs.kind(url, request.param) == "instance":
            _note(span, "gmaivl.image.source", "dicomweb_instance")
            with tracing.span("image.fetch"):
                data = await fetch_instance(self.fetcher, pacs, url, request.param)
            mime = DICOM_TYPE
        else:
            _note(span, "gmaivl.image.source", "dicomweb_rendered")
            return await self._rendered(pacs, url, options, request.param)
        return await self.decode(mime, data, options, request.param)

    async def decode(
        self, mime: str, data: bytes, options: DicomOptions, param: str
    ) -> ResolvedImage:
        """Bytes of a declared type -> images, in a thread, traced as `image.decode`."""
        attributes = {"gmaivl.image.media_type": mime, "gmaivl.image.bytes": len(data)}
        with tracing.span("image.decode", attributes) as span:
            resolved = await asyncio.to_thread(
                decode_payload, mime, data, options, self.limits, param
            )
            _note(span, "gmaivl.image.count", len(resolved.images))
            return resolved

    async def _rendered(
        self, pacs: Pacs, url: httpx.URL, options: DicomOptions, param: str
    ) -> ResolvedImage:
        """The PACS renders; we pass the client's window as numbers (a preset too)."""
        if options.frames:
            raise errors.InvalidRequest(
                "dicom.frames does not apply to a /rendered URL; reference the instance.",
                param=f"{param}.image_url.dicom.frames",
                code="invalid_frame",
            )
        window = PRESETS[options.window] if isinstance(options.window, str) else options.window
        with tracing.span("image.fetch"):
            fetched = await fetch_rendered(self.fetcher, pacs, url, window, param)
        resolved = await self.decode(fetched.media_type, fetched.body, options, param)
        used = None
        if window is not None:
            used = {"center": window.center, "width": window.width, "function": window.function}
            used["source"] = "preset" if isinstance(options.window, str) else "request"
            if isinstance(options.window, str):
                used["preset"] = options.window
        return ResolvedImage(
            resolved.images, {"param": param, "rendered_by": "pacs", "window": used}
        )


def _note(span: Any, key: str, value: str | int) -> None:
    if span is not None:
        span.set_attribute(key, value)


def decode_payload(
    mime: str, data: bytes, options: DicomOptions, limits: ImageLimits, param: str
) -> ResolvedImage:
    """Bytes of a declared type -> images (CPU work: call it in a thread)."""
    if mime != DICOM_TYPE:
        return ResolvedImage([decode_image(mime, data, limits, param)])
    rendered = dicom_to_rgb(data, options, limits, param)
    info = {
        "param": param,
        "frame_count": rendered.frame_count,
        "frames": [
            {"number": frame.number, "window": frame.window.as_dict() if frame.window else None}
            for frame in rendered.frames
        ],
    }
    images = [fit_array(frame.pixels, limits.max_side) for frame in rendered.frames]
    return ResolvedImage(images, info, rendered.sop_instance_uid)
