"""A verified token's claims -> its tenant (docs/security.md, "Tokens and tenants").

The claim named by `GMAIVL_OIDC_TENANT_CLAIM` (default `groups`; a dotted path
such as `realm_access.roles` reaches a nested object) holds a string or a list of
strings. Its values select the tenant, in this order:
1. the key file's `claim_tenants` (explicit mappings): if they name exactly one
   tenant, that tenant, whatever else the values match; if they name two, 403;
2. otherwise a value equal to a tenant listed under the key file's `tenants`:
   exactly one such tenant, or 403 (none: the message names the claim that is
   missing a tenant; two: it says an explicit mapping must decide).
Messages never list the user's values or the tenants they matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service import errors
from service.security.keys import KeyFile

MAX_VALUES = 1024  # a claim with more values is read up to this many


def claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The string values at a dotted path: a string is one value, a list its strings."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return []
        node = node[part]
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [v for v in node[:MAX_VALUES] if isinstance(v, str)]
    return []


def tenant_for(claims: Mapping[str, Any], path: str, keys: KeyFile) -> str:
    values = claim_values(claims, path)
    explicit = {keys.claim_tenants[v] for v in values if v in keys.claim_tenants}
    if len(explicit) == 1:
        return explicit.pop()
    if len(explicit) > 1:
        raise _ambiguous(path)
    named = {v for v in values if v in keys.tenants}
    if len(named) == 1:
        return named.pop()
    if len(named) > 1:
        raise _ambiguous(path)
    raise errors.PermissionDenied(
        f"The access token's '{path}' claim names no tenant of this gateway: ask the "
        "administrator to map one of your groups to a tenant.",
        code="no_tenant",
    )


def _ambiguous(path: str) -> errors.PermissionDenied:
    return errors.PermissionDenied(
        f"The access token's '{path}' claim matches more than one tenant; an explicit "
        "mapping (claim_tenants in the key file) must decide.",
        code="ambiguous_tenant",
    )
