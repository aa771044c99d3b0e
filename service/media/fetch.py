"""Safe HTTP(S) fetching of image URLs: the only way the gateway reads a remote URL.

For every hop (the URL, then each same-host redirect), in this order:
1. scheme http/https, no user:password in the URL (400);
2. the host must be on the allow-list given for this fetch: otherwise 400 before
   any DNS lookup or connection;
3. DNS: every address the name resolves to must be public, or inside an
   allow-listed network; private, loopback, link-local, multicast and reserved
   addresses are refused (400). An allow-listed IP literal is that explicit
   permission. The connection goes to the checked address (the name is sent as
   Host and TLS SNI), so a second lookup cannot swap in another address;
4. a redirect to another scheme/host/port is refused (400); same-host
   redirects are followed up to `max_redirects`;
5. connect/read timeouts and a total deadline (a server that drips bytes
   cannot hold a request): 400 `image_fetch_timeout`;
6. the content type must be one the caller accepts (400);
7. the byte cap: a larger Content-Length is refused before reading, and the
   body is counted while it streams, stopped at the cap (413).
Messages quote nothing of the URL (host, path, query: the client's text, and paths
hold study UIDs) nor of the response's headers; `param` names the image part.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

import httpx

from service import errors
from service.http_transport import ResetTolerantTransport

# httpx logs every request URL at INFO; image URLs carry study and instance UIDs.
logging.getLogger("httpx").setLevel(logging.WARNING)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HostPolicy:
    """Where one fetch may go: host names / IP literals, and networks private addresses
    may be in (e.g. the hospital LAN a PACS lives on)."""

    allowed_hosts: frozenset[str]
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, hosts: list[str], networks: list[str] = ()) -> HostPolicy:  # type: ignore[assignment]
        return cls(
            frozenset(h.strip().lower().strip("[]") for h in hosts if h.strip()),
            tuple(ipaddress.ip_network(n, strict=False) for n in networks),
        )

    def allows_host(self, host: str) -> bool:
        return host.lower().strip("[]") in self.allowed_hosts

    def allows_address(self, host: str, address: IPAddress) -> bool:
        if _ip_literal(host) == address and self.allows_host(host):
            return True  # the operator listed this very address
        if any(address in network for network in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    total_timeout: float = 20.0
    max_redirects: int = 3


@dataclass(frozen=True)
class Fetched:
    content_type: str  # the full header value (multipart needs its boundary)
    media_type: str  # lower-case type/subtype
    body: bytes


@dataclass(frozen=True)
class Posted:
    """The answer to a POST: its status and the first bytes of its body (capped)."""

    status_code: int
    content_type: str
    body: bytes


class SafeFetcher:
    """One pooled httpx client for the gateway; `fetch` applies the rules above."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address checks
            transport=ResetTolerantTransport(trust_env=False),
            timeout=httpx.Timeout(
                limits.read_timeout, connect=limits.connect_timeout, pool=limits.connect_timeout
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(
        self,
        url: str,
        *,
        policy: HostPolicy,
        accept: str,
        content_types: frozenset[str],
        param: str,
        headers: Mapping[str, str] | None = None,
    ) -> Fetched:
        target = parse_url(url, param)
        async with self._within_total_timeout("Fetching the image", param):
            for _ in range(self.limits.max_redirects + 1):
                address = await checked_address(target, policy, param)
                request = self._client.build_request(
                    "GET",
                    target.copy_with(host=str(address)),
                    headers={**(headers or {}), "Accept": accept, "Host": _host_header(target)},
                    extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
                )
                with _transport_errors("while connecting", param):
                    response = await self._client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        target = _redirect_target(target, response, param)
                        continue
                    return await self._read(target, response, content_types, param)
                finally:
                    await response.aclose()
        raise errors.ImageFetchFailed(
            f"More than {self.limits.max_redirects} redirects.",
            param=param,
            code="image_url_redirect_refused",
        )

    async def post(
        self,
        url: str,
        *,
        policy: HostPolicy,
        content: bytes,
        content_type: str,
        param: str,
        headers: Mapping[str, str] | None = None,
        accept: str = "*/*",
    ) -> Posted:
        """POST `content` under the same rules as a fetch (allow-list, address checks,
        timeouts); redirects are not followed (a POST body is not replayed elsewhere).
        Any status comes back: the caller decides what counts as delivered."""
        target = parse_url(url, param)
        async with self._within_total_timeout("The POST", param):
            address = await checked_address(target, policy, param)
            request = self._client.build_request(
                "POST",
                target.copy_with(host=str(address)),
                content=content,
                headers={
                    **(headers or {}),
                    "Content-Type": content_type,
                    "Accept": accept,
                    "Host": _host_header(target),
                },
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            with _transport_errors("while receiving a POST", param):
                response = await self._client.send(request, stream=True)
            try:
                body = bytearray()
                with _transport_errors("while answering a POST", param):
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.limits.max_bytes:
                            break  # an answer is read for its status; the rest is dropped
                return Posted(
                    response.status_code,
                    response.headers.get("content-type", ""),
                    bytes(body[: self.limits.max_bytes]),
                )
            finally:
                await response.aclose()

    @contextlib.asynccontextmanager
    async def _within_total_timeout(self, what: str, param: str) -> AsyncIterator[None]:
        """The whole exchange bounded by `total_timeout`; past it, image_fetch_timeout."""
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                yield
        except TimeoutError as exc:
            raise errors.ImageFetchFailed(
                f"{what} took longer than {self.limits.total_timeout:g} s.",
                param=param,
                code="image_fetch_timeout",
            ) from exc

    async def _read(
        self,
        target: httpx.URL,
        response: httpx.Response,
        content_types: frozenset[str],
        param: str,
    ) -> Fetched:
        if response.status_code == 204 and "" in content_types:
            return Fetched(content_type="", media_type="", body=b"")  # e.g. an empty QIDO result
        if response.status_code != 200:
            raise errors.ImageFetchFailed(
                f"The image server answered HTTP {response.status_code}.",
                param=param,
                upstream_status=response.status_code,
            )
        content_type = response.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in content_types:
            raise errors.InvalidRequest(
                "The image URL returned an unsupported content type; expected one of: "
                + ", ".join(sorted(content_types))
                + ".",
                param=param,
                code="unsupported_image_type",
            )
        cap = self.limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise errors.ImageTooLarge(
                f"Image is larger than the limit of {cap} bytes.", param=param
            )
        body = bytearray()
        with _transport_errors("while sending the image", param):
            async for chunk in response.aiter_bytes():  # decoded: gzip bombs count too
                body += chunk
                if len(body) > cap:
                    raise errors.ImageTooLarge(
                        f"Image is larger than the limit of {cap} bytes.", param=param
                    )
        return Fetched(content_type=content_type, media_type=media_type, body=bytes(body))


@contextlib.contextmanager
def _transport_errors(stage: str, param: str) -> Iterator[None]:
    """httpx's transport errors as ours; the message names the stage only."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise errors.ImageFetchFailed(
            f"The image server timed out {stage}.", param=param, code="image_fetch_timeout"
        ) from exc
    except httpx.HTTPError as exc:
        raise errors.ImageFetchFailed(f"The image server failed {stage}.", param=param) from exc


def parse_url(url: str, param: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise errors.InvalidRequest(
            "The image URL is not valid.", param=param, code="invalid_image_url"
        ) from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise errors.InvalidRequest(
            "Image URLs must be http(s) URLs or data: URLs.", param=param, code="invalid_image_url"
        )
    if target.userinfo:
        raise errors.InvalidRequest(
            "Image URLs must not carry credentials.", param=param, code="invalid_image_url"
        )
    return target


async def checked_address(target: httpx.URL, policy: HostPolicy, param: str) -> IPAddress:
    """The address to connect to, after the allow-list and address checks."""
    host = target.host
    if not policy.allows_host(host):
        raise errors.ImageFetchFailed(
            "The image URL's host is not on the image allow-list.",
            param=param,
            code="image_url_not_allowed",
        )
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise errors.ImageFetchFailed(
                "The image URL's host could not be resolved.", param=param
            ) from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if not policy.allows_address(host, a)]
    if refused or not addresses:
        raise errors.ImageFetchFailed(
            "The image URL's host resolves to a private, loopback or link-local address.",
            param=param,
            code="image_url_not_allowed",
        )
    return addresses[0]


def _redirect_target(current: httpx.URL, response: httpx.Response, param: str) -> httpx.URL:
    try:
        target = current.join(response.headers.get("location", ""))
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise errors.ImageFetchFailed(
            "The image server redirected to an invalid URL.",
            param=param,
            code="image_url_redirect_refused",
        ) from exc
    if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
        raise errors.ImageFetchFailed(
            "The image server redirected to another host; that is not followed.",
            param=param,
            code="image_url_redirect_refused",
        )
    return target


def _host_header(target: httpx.URL) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}" if target.port else host


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
