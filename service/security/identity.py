"""Who asked, when a person asked: the verified token's subject and issuer.

`sub` is unique only within its issuer, so the pair names a user. Audit events
carry both in clear (an auditor must find the clinician); traces carry only
`pseudonym`, an HMAC under a configured secret, so a trace store (often run by
another team, kept longer, exported) holds no workforce identifiers, while the
one who holds the secret can still link a trace to a user.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    sub: str
    iss: str
    scopes: frozenset[str] = frozenset()

    def pseudonym(self, secret: bytes) -> str:
        """HMAC-SHA256(secret, iss NUL sub), 128 bits in hex: stable per user and secret."""
        message = self.iss.encode() + b"\x00" + self.sub.encode()
        return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]

    def digest(self) -> str:
        """SHA-256 of iss NUL sub, 128 bits in hex: what a stored response keeps to know
        its user again (not the sub itself, which is a workforce identifier)."""
        message = self.iss.encode() + b"\x00" + self.sub.encode()
        return hashlib.sha256(message).hexdigest()[:32]

    def to_json(self) -> dict[str, str]:
        return {"sub": self.sub, "iss": self.iss}
