"""The console at `/ui/`: static files shipped in `service/console/static`, read once
and served from memory with a strict Content-Security-Policy.

The page is same-origin with the API and talks only to it; it carries no data
of its own, so its paths are public (`CONSOLE_PATHS` join the middleware's
public set: an exact set lookup, nothing added to the chat path). No inline
script or style, no external origin: `script-src 'self'`, `connect-src 'self'`,
plus the IdP's origin when sign-in is configured (the page exchanges its
authorization code at the IdP's token endpoint) and nothing else.

`config.json` tells the page whether it may offer "Sign in" and where: the
issuer, the public client id, the scopes, and the authorization and token
endpoints from the gateway's own (cached) discovery of the IdP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response

from service import errors
from service.security.jwks import ProviderMetadata

PREFIX = "/ui/"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "signin.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
CONFIG = "config.json"
CONSOLE_PATHS = frozenset({"/ui", PREFIX, PREFIX + CONFIG, *(PREFIX + name for name in FILES)})


@dataclass(frozen=True)
class SignIn:
    """The console's sign-in: a public client of the IdP (code flow + PKCE)."""

    issuer: str
    client_id: str
    scope: str
    metadata: Callable[[], Awaitable[ProviderMetadata]]  # the verifier's cached discovery

    @property
    def origin(self) -> str:
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"


def csp(idp_origin: str | None = None) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",  # previews are PNG data: URLs the API returns
            "connect-src 'self'" + (f" {idp_origin}" if idp_origin else ""),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def headers(idp_origin: str | None = None) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(idp_origin),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


CSP = csp()
HEADERS = headers()


def _load() -> dict[str, bytes]:
    static = resources.files("service.console").joinpath("static")
    return {name: static.joinpath(name).read_bytes() for name in FILES}


_CONTENT = _load()


def console_router(sign_in: SignIn | None = None) -> APIRouter:
    """The console's routes; with `sign_in`, its CSP allows the IdP's origin."""
    router = APIRouter(include_in_schema=False)
    page_headers = headers(sign_in.origin if sign_in is not None else None)

    def file(name: str) -> Response:
        return Response(_CONTENT[name], media_type=FILES[name], headers=page_headers)

    @router.get("/ui")
    async def console_redirect() -> RedirectResponse:
        return RedirectResponse(PREFIX, status_code=308)

    @router.get(PREFIX)
    async def console_index() -> Response:
        return file("index.html")

    for name in FILES:
        router.add_api_route(PREFIX + name, lambda name=name: file(name), methods=["GET"])

    @router.get(PREFIX + CONFIG)
    async def console_config() -> Response:
        return JSONResponse(await _config(sign_in), headers=page_headers)

    return router


async def _config(sign_in: SignIn | None) -> dict[str, object]:
    if sign_in is None:
        return {"sign_in": None}
    metadata = await sign_in.metadata()  # NotReady when the IdP was never reached
    if metadata.authorization_endpoint is None or metadata.token_endpoint is None:
        raise errors.NotReady(
            "The identity provider publishes no authorization or token endpoint.",
            code="identity_provider_unavailable",
        )
    return {
        "sign_in": {
            "issuer": sign_in.issuer,
            "client_id": sign_in.client_id,
            "scope": sign_in.scope,
            "authorization_endpoint": metadata.authorization_endpoint,
            "token_endpoint": metadata.token_endpoint,
        }
    }
