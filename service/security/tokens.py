"""Verify a bearer access token from the IdP (a JWT, RFC 9068) with PyJWT.

In order, each failure a 401 whose message quotes nothing of the token:
1. size: at most `max_token_bytes`; a compact JWS (three parts; an encrypted or
   opaque token is not one);
2. header: `alg` from the allow-list (RS256, PS256, ES256: never `none`, never an
   HMAC, whose key would be the public key); no `jku`, `x5u`, `jwk`, `x5c` (a
   token never chooses its own key) nor `crit`; `typ`, when present, `JWT` or
   `at+jwt`; a `kid` naming a key the IdP publishes (jwks.py), of the alg's type;
3. signature, then claims: `iss` and `aud` exactly the configured ones, `exp`,
   `iat` required and `nbf` honoured with `leeway` seconds of skew, `sub` a
   non-empty string; an ID token (Keycloak's `typ: ID`) is refused.
A verified token is remembered by its SHA-256 until it expires, so a client that
sends the same token on every request pays a hash and a dict lookup, not an
RSA verification; its expiry is checked on every use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import jwt

from service import errors
from service.security.identity import Identity
from service.security.jwks import ALLOWED_ALGORITHMS, JwksCache

FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
ACCESS_TOKEN_TYPES = ("jwt", "at+jwt", "application/at+jwt")
MAX_SUB_CHARS = 255


@dataclass(frozen=True)
class VerifiedToken:
    identity: Identity
    claims: Mapping[str, Any]
    expires_at: float  # exp + leeway, Unix seconds


def refused(message: str) -> errors.AuthenticationFailed:
    return errors.AuthenticationFailed(message, code="invalid_token")


def expired() -> errors.AuthenticationFailed:
    """Its own code: a client knows to renew rather than to sign in again."""
    return errors.AuthenticationFailed("The access token has expired.", code="token_expired")


@dataclass(eq=False)
class TokenVerifier:
    issuer: str
    audience: str
    jwks: JwksCache
    _: KW_ONLY
    leeway: float = 30.0
    max_token_bytes: int = 8192
    cache_size: int = 4096
    clock: Callable[[], float] = time.time
    _verified: dict[bytes, VerifiedToken] = field(default_factory=dict, init=False, repr=False)

    async def verify(self, token: str) -> VerifiedToken:
        if len(token) > self.max_token_bytes:
            raise refused(f"The access token is longer than {self.max_token_bytes} bytes.")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        known = self._verified.get(digest)
        if known is not None:
            if self.clock() <= known.expires_at:
                return known
            del self._verified[digest]
            raise expired()
        verified = await self._verify(token)
        self._remember(digest, verified)
        return verified

    async def _verify(self, token: str) -> VerifiedToken:
        if token.count(".") != 2:
            raise refused("The bearer token is neither an API key nor a signed JWT.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise refused("The access token's header cannot be read.") from exc
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise refused(
                "The access token's signature algorithm is not accepted "
                f"(accepted: {', '.join(ALLOWED_ALGORITHMS)})."
            )
        if any(name in header for name in FORBIDDEN_HEADERS):
            raise refused(
                "The access token's header names a key or critical extension "
                "(jku, x5u, jwk, x5c, crit); keys come only from the identity provider."
            )
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            raise refused("The token is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise refused("The access token names no signing key (kid).")
        key = await self.jwks.key(kid)
        if key is None or not key.accepts(alg):
            raise refused("The access token is not signed by a key of the identity provider.")
        claims = self._decode(token, key.key, alg)
        if claims.get("typ") == "ID":  # Keycloak marks its ID tokens so
            raise refused("An ID token is not an access token.")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
            raise refused("The access token has no valid subject (sub).")
        identity = Identity(sub=sub, iss=self.issuer, scopes=scopes_of(claims))
        return VerifiedToken(identity, claims, float(claims["exp"]) + self.leeway)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise expired() from exc
        except jwt.ImmatureSignatureError as exc:
            raise refused("The access token is not valid yet (nbf or iat).") from exc
        except jwt.InvalidIssuedAtError as exc:
            raise refused("The access token's issue time (iat) is not valid.") from exc
        except jwt.InvalidAudienceError as exc:
            raise refused("The access token is not meant for this API (aud).") from exc
        except jwt.InvalidIssuerError as exc:
            raise refused("The access token comes from another issuer (iss).") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise refused(
                "The access token lacks a required claim (exp, iat, iss, aud, sub)."
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise refused("The access token's signature does not verify.") from exc
        except jwt.PyJWTError as exc:
            raise refused("The access token cannot be verified.") from exc

    def _remember(self, digest: bytes, verified: VerifiedToken) -> None:
        if self.cache_size <= 0:
            return
        if len(self._verified) >= self.cache_size:
            now = self.clock()
            for old in [d for d, v in self._verified.items() if v.expires_at < now]:
                del self._verified[old]
            while len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[digest] = verified


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """`scope` (RFC 9068: space-separated) or Entra ID's `scp`; a list is accepted too."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)
