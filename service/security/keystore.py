"""The gateway's view of the key file: authenticate a bearer key, reload on change.

The file is re-read when its identity changes (mtime, size, inode: a Kubernetes
Secret update swaps the `..data` symlink, which changes all three of the file
the path resolves to), checked at most once per `reload_interval` seconds on
the request path, so revoking a key or adding a tenant needs no restart. A file
that fails to parse is logged and the previous keys stay in force.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from service import errors
from service.security.keys import KeyFile, KeyRecord, digest, key_id_of
from service.security.policy import Principal

log = logging.getLogger("gmaivl.auth")

# Compared against when the presented id is unknown, so refusals cost what a match costs.
_DUMMY = KeyRecord(id="0" * 12, tenant="-", sha256="0" * 64)
OTHER_TENANTS = "other"


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, int, int]
    by_id: dict[str, tuple[KeyRecord, bytes]]
    keys: KeyFile
    labels: frozenset[str]


class KeyStore:
    def __init__(self, path: Path, reload_interval: float = 2.0, max_tenant_labels: int = 32):
        self.path = Path(path)
        self.reload_interval = reload_interval
        self.max_tenant_labels = max_tenant_labels
        try:  # a broken file at start is an error, not a warning: one line, no traceback
            self._loaded = self._read()
        except (OSError, ValueError, TypeError) as exc:
            raise AuthConfigError(
                f"API key file {self.path} is not usable ({type(exc).__name__}: {exc}); "
                'an empty one is {"version": 1, "keys": []} (docs/security.md)'
            ) from None
        self._checked = time.monotonic()

    @property
    def keys(self) -> KeyFile:
        self._maybe_reload()
        return self._loaded.keys

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The principal of an `Authorization: Bearer <key>` header value, or
        AuthenticationFailed. The messages never quote what was sent."""
        self._maybe_reload()
        if not authorization:
            raise errors.AuthenticationFailed(
                "Missing API key: send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        token = token.strip()
        key_id = key_id_of(token) if scheme.lower() == "bearer" else None
        record, expected = self._loaded.by_id.get(key_id or "", (_DUMMY, bytes(32)))
        matches = hmac.compare_digest(digest(token), expected)
        if not matches or record is _DUMMY:
            raise errors.AuthenticationFailed("Incorrect API key provided.")
        if not record.active:
            # Only the holder of a once-valid key learns this: it tells them to rotate.
            raise errors.AuthenticationFailed(
                "This API key has been revoked.", code="revoked_api_key"
            )
        tenant = record.tenant
        return Principal(
            key_id=record.id,
            tenant=tenant,
            policy=self._loaded.keys.policy_of(tenant),
            metric_label=self.metric_label(tenant),
        )

    def metric_label(self, tenant: str) -> str:
        """The tenant's metrics label: its id within the label budget, else `other`."""
        return tenant if tenant in self._loaded.labels else OTHER_TENANTS

    def tenant_ids(self) -> set[str]:
        """Every tenant the key file names (declared with a policy, or holding a key)."""
        keys = self.keys
        return set(keys.tenants) | {record.tenant for record in keys.keys}

    def acting_for(self, tenant: str, key_id: str) -> Principal:
        """A principal for work no key asked for (the DICOM node's reads, by its rules):
        the tenant's policy and metric label, `key_id` naming the door."""
        self._maybe_reload()
        return Principal(
            key_id=key_id,
            tenant=tenant,
            policy=self._loaded.keys.policy_of(tenant),
            metric_label=self.metric_label(tenant),
        )

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_interval:
            return
        self._checked = now
        try:
            if _signature(self.path) == self._loaded.signature:
                return
            self._loaded = self._read()
            log.info("reloaded API keys: %d keys", len(self._loaded.by_id))
        except Exception as exc:  # keep serving with the keys we have
            log.error(
                "API key file not reloaded (%s); previous keys stay in force", type(exc).__name__
            )

    def _read(self) -> _Loaded:
        signature = _signature(self.path)
        keys = KeyFile.load(self.path)
        by_id = {record.id: (record, bytes.fromhex(record.sha256)) for record in keys.keys}
        # Tenant ids become metric labels only for the first N declared tenants: the
        # label set stays bounded by configuration, not by traffic.
        labels = frozenset(list(keys.tenants)[: self.max_tenant_labels])
        return _Loaded(signature, by_id, keys, labels)


def _signature(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class AuthConfigError(ValueError):
    """The settings would start a server that is open by accident."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_store_for(
    auth: str, keys_file: Path | None, host: str, reload_interval: float, max_tenant_labels: int
) -> KeyStore | None:
    """The key store the settings ask for, or None when auth is off.

    `auto` is off only on a loopback bind without a key file: the embedded default
    of `make run`. Anything reachable from the network needs keys or an explicit
    `off`, which is logged loudly."""
    if auth == "keys" or (auth == "auto" and keys_file is not None):
        if keys_file is None:
            raise AuthConfigError("GMAIVL_AUTH=keys needs GMAIVL_API_KEYS_FILE")
        store = KeyStore(keys_file, reload_interval, max_tenant_labels)
        log.info("API keys required: %d keys from %s", len(store.keys.keys), keys_file)
        return store
    if auth == "auto" and not is_loopback(host):
        raise AuthConfigError(
            f"refusing to serve on {host} without API keys: set GMAIVL_API_KEYS_FILE "
            "(gmai-vl keys create), or GMAIVL_AUTH=off to run an open server on purpose"
        )
    if is_loopback(host):
        log.info("API keys off: local use on %s", host)
    else:
        banner = "!" * 72
        log.warning(
            "\n%s\nAUTHENTICATION IS OFF on %s: anyone who reaches this port can use the model "
            "and send it images.\nSet GMAIVL_API_KEYS_FILE to require keys (docs/security.md).\n%s",
            banner,
            host,
            banner,
        )
    return None
