"""The httpx transport of the gateway's outgoing async clients (`SafeFetcher`: image
URLs, PACS, webhooks, OIDC discovery; `OpenAIForwardEngine`: a remote engine).

It is httpx's own with one correction. Under uvloop, when a peer resets a connection
in the instant after it opened (a PACS or an engine being stopped), anyio asks the
already closed transport for its socket, gets None, and an AttributeError escapes
httpcore (seen with anyio 4.16, httpcore 1.0.9, uvloop 0.23). That is a failed
connection, so it surfaces as one, `httpx.ConnectError`, which every caller handles:
otherwise a read whose PACS stopped failed as `server_error`, not `pacs_unavailable`.
Nothing of ours runs inside `handle_async_request`, so no bug of ours is hidden.
"""

from __future__ import annotations

import httpx


class ResetTolerantTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except AttributeError as exc:
            raise httpx.ConnectError(
                "The connection was reset as it opened.", request=request
            ) from exc
