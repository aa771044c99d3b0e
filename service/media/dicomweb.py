"""DICOMweb (WADO-RS) references to configured PACS: which PACS owns a URL, and fetching
an instance (multipart/related of application/dicom) or its `/rendered` picture.

Accepted URL shapes, under a PACS's `base_url` (its DICOMweb root):
    {base}/studies/{study}/series/{series}/instances/{instance}            -> DICOM
    {base}/studies/{study}/series/{series}/instances/{instance}/rendered   -> PNG/JPEG
The PACS's credentials are sent only to URLs under its own base URL; the fetch
itself goes through `SafeFetcher` (allow-list = the PACS host, redirects, caps).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from email.message import Message
from typing import Literal

import httpx

from service import errors
from service.config import PacsEntry
from service.media.fetch import Fetched, HostPolicy, SafeFetcher, parse_url
from service.media.windowing import Window

# transfer-syntax=* asks for the stored encoding: no transcoding on the PACS, and
# our decoders handle the compressed syntaxes.
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
INSTANCE_TYPES = frozenset({"multipart/related", "application/dicom"})
# One type: Orthanc's DICOMweb plugin (1.7) answers a list of types with 400. PNG is lossless.
RENDERED_ACCEPT = "image/png"
RENDERED_TYPES = frozenset({"image/png", "image/jpeg"})

# The one UID rule for every UID that goes into a DICOMweb URL (PS3.5 9.1): components
# of digits joined by single dots, no empty component, no leading zero except a lone
# "0", at most 64 characters. Not any run of digits and dots: "..", "." and "..." are
# path segments that httpx or the PACS would resolve to another resource.
_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID_BODY = rf"{_COMPONENT}(?:\.{_COMPONENT})*"
UID_PATTERN = rf"^{_UID_BODY}$"
UID_MAX = 64
_UID = re.compile(UID_PATTERN)
_UID_IN_PATH = rf"(?=[0-9.]{{1,{UID_MAX}}}(?:/|$)){_UID_BODY}"
_INSTANCE_PATH = re.compile(
    rf"^/studies/{_UID_IN_PATH}/series/{_UID_IN_PATH}/instances/{_UID_IN_PATH}"
    r"(?P<rendered>/rendered)?/?$"
)


def valid_uid(value: str) -> bool:
    """True for a DICOM UID under the rule above."""
    return len(value) <= UID_MAX and _UID.match(value) is not None


def check_uid(value: str, param: str) -> str:
    """`value` when it is a DICOM UID; else 400 `invalid_uid` naming `param` (never the value)."""
    if not valid_uid(value):
        raise errors.InvalidRequest(
            "A DICOM UID is numbers joined by single dots (no leading zeros), "
            f"at most {UID_MAX} characters.",
            param=param,
            code="invalid_uid",
        )
    return value


Kind = Literal["instance", "rendered"]


@dataclass(frozen=True)
class Pacs:
    name: str
    base: httpx.URL
    policy: HostPolicy
    headers: dict[str, str]  # authorization; never logged

    @classmethod
    def from_entry(cls, entry: PacsEntry) -> Pacs:
        base = parse_url(entry.base_url.rstrip("/"), param="pacs.base_url")
        headers: dict[str, str] = {}
        if entry.bearer_token is not None:
            headers["Authorization"] = f"Bearer {entry.bearer_token.get_secret_value()}"
        elif entry.username is not None:
            password = entry.password.get_secret_value() if entry.password else ""
            token = base64.b64encode(f"{entry.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return cls(
            name=entry.name,
            base=base,
            policy=HostPolicy.of([base.host], entry.allowed_networks),
            headers=headers,
        )

    def owns(self, url: httpx.URL) -> bool:
        same_origin = (url.scheme, url.host, url.port) == (
            self.base.scheme,
            self.base.host,
            self.base.port,
        )
        return same_origin and url.path.startswith(self.base.path.rstrip("/") + "/")

    def kind(self, url: httpx.URL, param: str) -> Kind:
        match = _INSTANCE_PATH.match(url.path[len(self.base.path.rstrip("/")) :])
        if match is None:
            raise errors.InvalidRequest(
                f"DICOMweb URLs of PACS {self.name!r} must name one instance: "
                ".../studies/{study}/series/{series}/instances/{instance}[/rendered].",
                param=param,
                code="invalid_dicomweb_url",
            )
        return "rendered" if match["rendered"] else "instance"

    async def get(
        self,
        fetcher: SafeFetcher,
        url: httpx.URL,
        accept: str,
        content_types: frozenset[str],
        param: str,
    ) -> Fetched:
        """A safe fetch limited to this PACS's host, with its credentials."""
        return await fetcher.fetch(
            str(url),
            policy=self.policy,
            accept=accept,
            content_types=content_types,
            headers=self.headers,
            param=param,
        )


async def fetch_instance(fetcher: SafeFetcher, pacs: Pacs, url: httpx.URL, param: str) -> bytes:
    """The instance as a DICOM Part 10 file."""
    fetched = await pacs.get(fetcher, url, INSTANCE_ACCEPT, INSTANCE_TYPES, param)
    if fetched.media_type == "application/dicom":
        return fetched.body
    return first_dicom_part(fetched, param)


async def fetch_rendered(
    fetcher: SafeFetcher, pacs: Pacs, url: httpx.URL, window: Window | None, param: str
) -> Fetched:
    """The PACS's rendering; an explicit window is passed as the standard `window` query."""
    if window is not None:
        function = window.function.lower().replace("linear_exact", "linear-exact")
        # Commas unescaped: they are legal in a query, and Orthanc does not decode %2C.
        query = f"window={window.center:g},{window.width:g},{function}".encode()
        url = url.copy_with(query=url.query + b"&" + query if url.query else query)
    return await pacs.get(fetcher, url, RENDERED_ACCEPT, RENDERED_TYPES, param)


def first_dicom_part(fetched: Fetched, param: str) -> bytes:
    """The body of the first application/dicom part of a multipart/related response."""
    header = Message()
    header["content-type"] = fetched.content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _bad_multipart(param)
    delimiter = b"--" + boundary.encode("latin-1")
    body = fetched.body
    position = body.find(delimiter)
    while position >= 0:
        start = position + len(delimiter)
        if body[start : start + 2] == b"--":  # the closing delimiter
            break
        headers_end = body.find(b"\r\n\r\n", start)
        if headers_end < 0:
            break
        end = body.find(b"\r\n" + delimiter, headers_end + 4)
        if end < 0:
            break
        part_headers = body[start:headers_end].decode("latin-1").lower()
        if "application/dicom" in part_headers:
            return body[headers_end + 4 : end]
        position = end + 2
    raise _bad_multipart(param)


def _bad_multipart(param: str) -> errors.UnprocessableImage:
    return errors.UnprocessableImage(
        "The PACS answer holds no application/dicom part.", param=param, code="invalid_dicomweb"
    )
