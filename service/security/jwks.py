"""The IdP's discovery document and signing keys, fetched and cached.

Rules (docs/security.md, "Tokens"):
1. Discovery: `ISSUER/.well-known/openid-configuration`; its `issuer` must equal
   the configured one exactly (OpenID Connect Discovery 4.3), and its `jwks_uri`,
   `authorization_endpoint` and `token_endpoint` must share the issuer's origin
   (scheme, host, port): a document that points elsewhere is refused, so a key
   is only ever fetched from the issuer's own origin.
2. Fetches go through the caller's `fetch` (the gateway's SafeFetcher with the
   issuer's origin allowed: hospital IdPs sit on internal networks), never a
   client of its own.
3. Keys: `use` absent or `sig`; RSA (>= 2048 bits) or EC P-256; a key's own `alg`,
   when given, must be one we accept. Private members are never kept.
4. Refresh: keys older than `max_age`, or a `kid` we do not know, trigger a fetch,
   at most one per `refresh_interval` (a flood of tokens with made-up kids costs
   the IdP one request per interval) and one at a time (concurrent requests wait
   for the same fetch). A rotation is picked up without a restart.
5. A failed fetch keeps the keys we have (the IdP down: cached keys still
   verify); with no keys at all, verification is unavailable (503), not refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service import errors

log = logging.getLogger("gmaivl.auth")

FetchJson = Callable[[str], Awaitable[bytes]]
"""GET a URL and return its body; raises `errors.ServiceError` when it cannot."""

ALLOWED_ALGORITHMS = ("RS256", "PS256", "ES256")
MIN_RSA_BITS = 2048
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    jwks_uri: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    end_session_endpoint: str | None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: PublicKey
    alg: str | None  # the key's own `alg`, when the IdP states it

    def accepts(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be checked with this key."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg in ("RS256", "PS256"):
            return isinstance(self.key, rsa.RSAPublicKey)
        return isinstance(self.key, ec.EllipticCurvePublicKey)


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def parse_key(jwk: Any) -> SigningKey | None:
    """A verification key from one JWK, or None when it is not one we use."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    alg = jwk.get("alg")
    if alg is not None and alg not in ALLOWED_ALGORITHMS:
        return None
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
    try:
        if public.get("kty") == "RSA":
            key = RSAAlgorithm.from_jwk(public)
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
                return None
        elif public.get("kty") == "EC" and public.get("crv") == "P-256":
            key = ECAlgorithm.from_jwk(public)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return None
        else:
            return None
    except Exception:  # a malformed key is skipped, the others still count
        return None
    return SigningKey(jwk["kid"], key, alg)


@dataclass(eq=False)
class JwksCache:
    issuer: str
    fetch: FetchJson
    _: KW_ONLY
    refresh_interval: float = 30.0
    max_age: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _metadata: ProviderMetadata | None = field(default=None, init=False, repr=False)
    _keys: dict[str, SigningKey] = field(default_factory=dict, init=False, repr=False)
    # when the keys in hand were fetched; when a fetch was last tried
    _fetched_at: float | None = field(default=None, init=False, repr=False)
    _attempted_at: float | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def metadata(self) -> ProviderMetadata:
        """The discovery document (fetched once, then kept)."""
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    self._metadata = await self._discover()
        return self._metadata

    async def key(self, kid: str) -> SigningKey | None:
        """The key named `kid`, refetching when it is unknown or the keys are old (rule 4)."""
        known = self._keys.get(kid)
        if known is not None and not self._stale():
            return known
        await self._refresh()
        return self._keys.get(kid)

    async def warm(self) -> None:
        """Fetch discovery and keys now (at start-up); a failure is logged, not raised."""
        await self._refresh()

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at > self.max_age

    async def _refresh(self) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another request fetched while this one waited: use its result
            now = self.clock()
            if attempted is not None and now - attempted < self.refresh_interval:
                if not self._keys:
                    raise _unavailable()
                return
            self._attempted_at = now
            try:
                if self._metadata is None:
                    self._metadata = await self._discover()
                keys = await self._fetch_keys(self._metadata.jwks_uri)
            except (errors.ServiceError, IdpAnswerRefused) as exc:
                log.warning(
                    "identity provider keys not fetched (%s); %d cached keys stay in use",
                    getattr(exc, "code", None) or type(exc).__name__,
                    len(self._keys),
                )
                if not self._keys:
                    raise _unavailable() from exc
                return
            if set(keys) != set(self._keys):
                log.info("identity provider keys: %d (kids changed)", len(keys))
            self._keys, self._fetched_at = keys, now

    async def _discover(self) -> ProviderMetadata:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        raw = _json_object(await self.fetch(url), "discovery document")
        if raw.get("issuer") != self.issuer:
            raise _refused("the discovery document names another issuer")
        own = origin(self.issuer)

        def same_origin(name: str, required: bool) -> str | None:
            value = raw.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or origin(value) != own:
                raise _refused(f"the discovery document's {name} is not on the issuer's origin")
            return value

        jwks_uri = same_origin("jwks_uri", True)
        assert jwks_uri is not None
        return ProviderMetadata(
            issuer=self.issuer,
            jwks_uri=jwks_uri,
            authorization_endpoint=same_origin("authorization_endpoint", False),
            token_endpoint=same_origin("token_endpoint", False),
            end_session_endpoint=same_origin("end_session_endpoint", False),
        )

    async def _fetch_keys(self, uri: str) -> dict[str, SigningKey]:
        raw = _json_object(await self.fetch(uri), "key set")
        items = raw.get("keys")
        if not isinstance(items, list):
            raise _refused("the key set has no keys")
        keys = {}
        for item in items:
            key = parse_key(item)
            if key is not None and key.kid not in keys:
                keys[key.kid] = key
        if not keys:
            raise _refused("the key set has no usable signing key")
        return keys


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise _refused(f"the {what} is not JSON") from exc
    if not isinstance(raw, dict):
        raise _refused(f"the {what} is not a JSON object")
    return raw


class IdpAnswerRefused(Exception):
    """The IdP answered something we do not use (rules 1 and 3); never sent to a client."""


def _refused(reason: str) -> IdpAnswerRefused:
    log.error("identity provider answer refused: %s", reason)
    return IdpAnswerRefused(reason)


def _unavailable() -> errors.NotReady:
    return errors.NotReady(
        "The identity provider's signing keys are not available; try again shortly.",
        code="identity_provider_unavailable",
        retry_after=5,
    )
