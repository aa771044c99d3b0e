"""API keys: their format, their hash, and the key file.

A key is `gmai-<id>-<secret>`: `id` is 12 hex characters, public, and names the
key in the file, in `keys list` and in audit events; `secret` is 32 random
bytes (256 bits, URL-safe base64). Only SHA-256 of the whole key is stored.

Why SHA-256 and not scrypt/argon2: slow hashes protect *low-entropy* secrets
(passwords) from offline guessing. A 256-bit random secret cannot be guessed
whatever the hash, so a slow hash would only add its cost (tens of ms of CPU)
to every request. Lookup is by the public id; the comparison of digests is
constant-time (`hmac.compare_digest`), and unknown ids are compared against a
dummy digest so every refusal does the same work.

The key file (JSON; a Kubernetes Secret mounted as a file works as is):

    {
      "version": 1,
      "tenants": {"radiology": {"requests_per_minute": 60, "max_priority": "urgent"}},
      "default_policy": {"requests_per_minute": 30},
      "keys": [
        {"id": "3f9a1c2b7d4e", "tenant": "radiology", "sha256": "<64 hex>",
         "name": "pacs-viewer", "created": "2025-01-01T00:00:00Z", "revoked": null}
      ]
    }

`tenants` maps tenant ids to their policy (`policy.TenantPolicy` fields);
tenants not listed get `default_policy` (absent: no limits). `revoked` is the
revocation time or null; revoked keys stay listed for the audit trail.

Users who sign in at the hospital's IdP reach a tenant through a claim of their
access token (`GMAIVL_OIDC_TENANT_CLAIM`, `security/claims.py`): a value equal to
a tenant listed under `tenants` selects it, and `claim_tenants` maps other values
(a directory group's name, an Entra group's object id) explicitly:

    "claim_tenants": {"/Radiology": "radiology", "5f0c...-group-id": "emergency"}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.security.policy import UNLIMITED, TenantPolicy

KEY_PREFIX = "gmai"
KEY_ID_HEX = 12
SECRET_BYTES = 32
FORMAT_VERSION = 1
_KEY = re.compile(rf"^{KEY_PREFIX}-([0-9a-f]{{{KEY_ID_HEX}}})-([A-Za-z0-9_\-]{{43}})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


def new_key() -> tuple[str, str]:
    """A fresh key and its id."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    return f"{KEY_PREFIX}-{key_id}-{secrets.token_urlsafe(SECRET_BYTES)}", key_id


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def valid_tenant(tenant: str) -> bool:
    return bool(_TENANT.match(tenant))


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    sha256: str  # hex digest of the whole key
    name: str = ""
    created: str = ""
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass
class KeyFile:
    keys: list[KeyRecord] = field(default_factory=list)
    tenants: dict[str, TenantPolicy] = field(default_factory=dict)
    default_policy: TenantPolicy = UNLIMITED
    claim_tenants: dict[str, str] = field(default_factory=dict)  # token claim value -> tenant

    def policy_of(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default_policy)

    def create(self, tenant: str, name: str = "") -> str:
        """Adds a key for `tenant` and returns it: the only time it exists in clear."""
        if not valid_tenant(tenant):
            raise ValueError("a tenant id is 1-64 characters of A-Z a-z 0-9 . _ -")
        key, key_id = new_key()
        self.keys.append(KeyRecord(key_id, tenant, digest(key).hex(), name=name, created=_now()))
        return key

    def revoke(self, key_id: str) -> KeyRecord:
        for i, record in enumerate(self.keys):
            if record.id == key_id:
                if record.active:
                    self.keys[i] = replace(record, revoked=_now())
                return self.keys[i]
        raise KeyError(key_id)

    # file form

    @classmethod
    def parse(cls, text: str) -> KeyFile:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} key file")
        keys = []
        for item in raw.get("keys", []):
            record = KeyRecord(**item)
            if not re.fullmatch(r"[0-9a-f]{64}", record.sha256) or not valid_tenant(record.tenant):
                raise ValueError(f"key {record.id!r}: bad sha256 or tenant")
            keys.append(record)
        tenants = {
            name: TenantPolicy.from_json(policy)
            for name, policy in (raw.get("tenants") or {}).items()
        }
        default = TenantPolicy.from_json(raw.get("default_policy") or {})
        claim_tenants = raw.get("claim_tenants") or {}
        if not isinstance(claim_tenants, dict) or not all(
            isinstance(value, str) and value and isinstance(tenant, str) and valid_tenant(tenant)
            for value, tenant in claim_tenants.items()
        ):
            raise ValueError("claim_tenants maps claim values (strings) to tenant ids")
        return cls(keys=keys, tenants=tenants, default_policy=default, claim_tenants=claim_tenants)

    @classmethod
    def load(cls, path: Path) -> KeyFile:
        return cls.parse(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def load_or_new(cls, path: Path) -> KeyFile:
        return cls.load(path) if Path(path).exists() else cls()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "tenants": {name: policy.to_json() for name, policy in self.tenants.items()},
            "default_policy": self.default_policy.to_json(),
            "keys": [asdict(record) for record in self.keys],
            **({"claim_tenants": dict(self.claim_tenants)} if self.claim_tenants else {}),
        }

    def save(self, path: Path) -> None:
        """Atomically (write + rename): a gateway reloading it never reads half a file.
        Mode 0600: hashes are not secrets, but tenants and names are nobody's business."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.to_json(), out, indent=2)
                out.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
