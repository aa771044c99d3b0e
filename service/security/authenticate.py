"""One bearer credential -> a Principal: an API key (services), or an access token
from the hospital's IdP (people), both under the key file's tenants and policies.

- `gmai-<id>-<secret>` is a key (keystore.py); anything else is a token when OIDC is
  configured (tokens.py), and refused as a key otherwise.
- A token's tenant comes from its claims (claims.py); its policy is that tenant's.
- A route family may require a scope (`GMAIVL_OIDC_REQUIRED_SCOPES`): a token
  without it is 403 `insufficient_scope`. Keys carry no scopes: their tenant's
  policy is their limit.
- A token in the URL (`access_token=` in the query) is refused (401) even beside a
  valid header: URLs end up in proxy and browser logs; the header is the only way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl

from service import errors
from service.security.claims import tenant_for
from service.security.identity import Identity
from service.security.keys import KEY_PREFIX
from service.security.keystore import KeyStore
from service.security.policy import Principal
from service.security.tokens import TokenVerifier

log = logging.getLogger("gmaivl.auth")


class UserRefused(errors.PermissionDenied):
    """403 for a verified user (no tenant, two tenants, a missing scope): the audit
    event still names who was refused."""

    def __init__(self, refusal: errors.PermissionDenied, identity: Identity) -> None:
        super().__init__(refusal.message, param=refusal.param, code=refusal.code)
        self.identity = identity


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        tokens: TokenVerifier | None = None,
        *,
        tenant_claim: str = "groups",
        required_scopes: Mapping[str, str] | None = None,
    ) -> None:
        self.keys = keys
        self.tokens = tokens
        self.tenant_claim = tenant_claim
        self.required_scopes = dict(required_scopes or {})

    async def warm(self) -> None:
        """Fetch the IdP's discovery document and keys (start-up); failures are logged."""
        if self.tokens is not None:
            try:
                await self.tokens.jwks.warm()
            except errors.ServiceError:
                log.warning("identity provider not reached at start; tokens wait for it")

    async def authenticate(
        self, authorization: bytes | None, query: bytes = b"", family: str | None = None
    ) -> Principal:
        """The principal of an `Authorization: Bearer ...` value for a route of `family`
        (chat, reads, pacs, ops or None), or AuthenticationFailed / PermissionDenied."""
        if query and _has_token_parameter(query):
            raise errors.AuthenticationFailed(
                "Access tokens are accepted only in the Authorization header, never in the URL.",
                code="invalid_token",
            )
        if self.tokens is None:
            return self.keys.authenticate(authorization)
        scheme, _, credential = (authorization or b"").decode("latin-1").strip().partition(" ")
        credential = credential.strip()
        if not authorization or scheme.lower() != "bearer" or not credential:
            raise errors.AuthenticationFailed(
                "Missing credentials: send an API key or an access token as "
                "'Authorization: Bearer <credential>'.",
            )
        if credential.startswith(KEY_PREFIX + "-"):
            return self.keys.authenticate(authorization)
        verified = await self.tokens.verify(credential)
        identity = verified.identity
        scope = self.required_scopes.get(family) if family is not None else None
        if scope is not None and scope not in identity.scopes:
            raise UserRefused(
                errors.PermissionDenied(
                    f"This route needs the scope '{scope}' in the access token.",
                    code="insufficient_scope",
                ),
                identity,
            )
        keyfile = self.keys.keys
        try:
            tenant = tenant_for(verified.claims, self.tenant_claim, keyfile)
        except errors.PermissionDenied as exc:
            raise UserRefused(exc, identity) from None
        return Principal(
            key_id=None,
            tenant=tenant,
            policy=keyfile.policy_of(tenant),
            metric_label=self.keys.metric_label(tenant),
            identity=identity,
        )


def _has_token_parameter(query: bytes) -> bool:
    if b"access_token" not in query.lower():  # the common case: one substring test
        return False
    text = query.decode("latin-1")
    return any(name.lower() == "access_token" for name, _ in parse_qsl(text, True))
