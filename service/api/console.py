"""The console at `/ui/`: static files shipped in `service/console/static`, read once
and served from memory with a strict Content-Security-Policy.

The page is same-origin with the API and talks only to it; it carries no data
of its own, so its paths are public (`CONSOLE_PATHS` join the middleware's
public set: an exact set lookup, nothing added to the chat path). No inline
script or style, no external origin: `script-src 'self'`, `connect-src 'self'`.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

PREFIX = "/ui/"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
CONSOLE_PATHS = frozenset({"/ui", PREFIX, *(PREFIX + name for name in FILES)})

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # previews are PNG data: URLs the API returns
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    static = resources.files("service.console").joinpath("static")
    return {name: static.joinpath(name).read_bytes() for name in FILES}


_CONTENT = _load()


def _file(name: str) -> Response:
    return Response(_CONTENT[name], media_type=FILES[name], headers=HEADERS)


@router.get("/ui")
async def console_redirect() -> RedirectResponse:
    return RedirectResponse(PREFIX, status_code=308)


@router.get(PREFIX)
async def console_index() -> Response:
    return _file("index.html")


@router.get(PREFIX + "console.js")
async def console_script() -> Response:
    return _file("console.js")


@router.get(PREFIX + "console.css")
async def console_style() -> Response:
    return _file("console.css")


@router.get(PREFIX + "index.html")
async def console_index_file() -> Response:
    return _file("index.html")
