"""A real OpenID Provider for the tests: npm `oidc-provider` (installed by
`make oidc-provider` into tests/support/oidc_provider/node_modules) on a free
loopback port, started by PID and stopped by PID.

The test owns the provider's signing keys: it generates them here and hands the
private JWKS to the provider, so a test can both ask the provider for real tokens
(client credentials, the code flow on its login page) and sign tokens the
provider would never issue (expired, another audience) with the provider's own
key. `rotate()` restarts the provider on the same issuer with a new signing key
first and the old one still published, as an IdP's key rotation does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.processes import free_port, stop_process

PROVIDER_DIR = Path(__file__).parent / "support" / "oidc_provider"
AUDIENCE = "api://gmaivl-test"
SCOPES = ("gmaivl.chat", "gmaivl.reads", "gmaivl.pacs", "gmaivl.ops")
SERVICE_CLIENT = "pacs-integration"
SERVICE_SECRET = "service-client-secret-not-for-logs"
CONSOLE_CLIENT = "gmaivl-console"


@dataclass
class SigningKey:
    """A private key as the provider loads it (JWK) and as PyJWT signs with it."""

    kid: str
    private: Any  # rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    alg: str

    @classmethod
    def rsa(cls, kid: str | None = None, alg: str = "RS256") -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or uuid.uuid4().hex[:16], key, alg)

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or uuid.uuid4().hex[:16], ec.generate_private_key(ec.SECP256R1()), "ES256")

    def private_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk = json.loads(algorithm.to_jwk(self.private))
        jwk.pop("key_ops", None)  # PyJWT writes ["sign"]; the provider also verifies with it
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem_bytes(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self, claims: dict[str, Any], headers: dict[str, Any] | None = None, alg: str | None = None
    ) -> str:
        return jwt.encode(
            claims,
            self.private,
            algorithm=alg or self.alg,
            headers={"kid": self.kid, **(headers or {})},
        )


@dataclass
class Account:
    """A user of the provider: signs in with `login` (any password) and gets `sub` = login."""

    login: str
    token_claims: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)


class OidcProvider:
    def __init__(
        self,
        workdir: Path,
        *,
        accounts: list[Account] = (),  # type: ignore[assignment]
        client_token_claims: dict[str, Any] | None = None,
        redirect_uris: list[str] = (),  # type: ignore[assignment]
        access_token_ttl: int = 600,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys: list[SigningKey] = [
            SigningKey.rsa(),
            SigningKey.ec(),
            SigningKey.rsa(alg="PS256"),
        ]
        self.accounts = list(accounts)
        self.client_token_claims = client_token_claims or {"groups": ["radiology"]}
        self.redirect_uris = list(redirect_uris)
        self.access_token_ttl = access_token_ttl
        self.process: subprocess.Popen | None = None

    @property
    def signing_key(self) -> SigningKey:
        """The key the provider signs RS256 access tokens with (the first RSA key)."""
        return next(k for k in self.keys if k.alg == "RS256")

    def config(self) -> dict[str, Any]:
        clients: list[dict[str, Any]] = [
            {
                "client_id": SERVICE_CLIENT,
                "client_secret": SERVICE_SECRET,
                "grant_types": ["client_credentials"],
                "response_types": [],
                "redirect_uris": [],
                "scope": " ".join(SCOPES),
            }
        ]
        if self.redirect_uris:
            clients.append(
                {
                    "client_id": CONSOLE_CLIENT,
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "redirect_uris": self.redirect_uris,
                    "application_type": "web",
                    "scope": "openid offline_access " + " ".join(SCOPES),
                }
            )
        return {
            "port": self.port,
            "issuer": self.issuer,
            "audience": AUDIENCE,
            "scopes": list(SCOPES),
            "access_token_ttl": self.access_token_ttl,
            "jwks": {"keys": [k.private_jwk() for k in self.keys]},
            "clients": clients,
            "accounts": {
                a.login: {"claims": a.claims, "token_claims": a.token_claims} for a in self.accounts
            },
            "client_token_claims": {SERVICE_CLIENT: self.client_token_claims},
        }

    def start(self) -> OidcProvider:
        node = shutil.which("node")
        if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("oidc-provider is not installed: `make oidc-provider` installs it")
        path = self.workdir / "oidc-provider.json"
        path.write_text(json.dumps(self.config()))
        path.chmod(0o600)
        log = self.workdir / "oidc-provider.log"
        self.process = subprocess.Popen(
            [node, str(PROVIDER_DIR / "provider.mjs"), str(path)],
            cwd=PROVIDER_DIR,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"oidc-provider exited with {self.process.returncode}:\n{tail}")
            try:
                r = httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("oidc-provider did not answer its discovery document in 30 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None

    def rotate(self) -> SigningKey:
        """A new RSA signing key, published first (it signs from now on); the old ones stay
        published. The provider restarts on the same issuer, as a redeployed IdP does."""
        new = SigningKey.rsa()
        self.keys.insert(0, new)
        self.stop()
        self.start()
        return new

    def client_credentials_token(self, scope: str = " ".join(SCOPES)) -> str:
        r = httpx.post(
            self.issuer + "/token",
            data={"grant_type": "client_credentials", "scope": scope, "resource": AUDIENCE},
            auth=(SERVICE_CLIENT, SERVICE_SECRET),
            timeout=10,
        )
        r.raise_for_status()
        body = r.json()
        assert body["token_type"].lower() == "bearer"
        return body["access_token"]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Claims of a valid access token for AUDIENCE, as the provider issues them."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "clinician-0001",
            "client_id": SERVICE_CLIENT,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(SCOPES),
            "groups": ["radiology"],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def sign(self, headers: dict[str, Any] | None = None, alg: str = "RS256", **claims: Any) -> str:
        """A token signed with the provider's own key for `alg` (headers as RFC 9068 asks)."""
        key = next(k for k in self.keys if k.alg == alg)
        return key.sign(self.claims(**claims), {"typ": "at+jwt", **(headers or {})})

    def refused_tokens(self) -> dict[str, str]:
        """Every token the gateway must refuse with 401, by what is wrong with it."""
        now = int(time.time())
        claims = self.claims()
        attacker = SigningKey.rsa(kid="attacker-key")
        impostor = SigningKey.rsa(kid=self.signing_key.kid)  # the real kid, another key
        public_pem = self.signing_key.public_pem_bytes()
        hs_header = {"alg": "HS256", "typ": "at+jwt", "kid": self.signing_key.kid}
        signing_input = unsigned_token(hs_header, claims).rstrip(".")
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return {
            "expired": self.sign(iat=now - 900, exp=now - 120),
            "not yet valid": self.sign(nbf=now + 600),
            "issued in the future": self.sign(iat=now + 600, exp=now + 900),
            "wrong issuer": self.sign(iss="http://127.0.0.1:9/elsewhere"),
            "wrong audience": self.sign(aud="api://another-service"),
            "ID token (audience: a client)": self.sign(aud=CONSOLE_CLIENT, nonce="n-0S6_WzA2Mj"),
            "no exp": self.sign(exp=None),
            "unknown kid": SigningKey.rsa(kid="kid-nobody-published").sign(claims),
            "another key's signature": impostor.sign(claims),
            "alg none": unsigned_token({"alg": "none", "kid": self.signing_key.kid}, claims),
            "HS256 with the public key": f"{signing_input}.{b64url(mac)}",
            "jku pointing elsewhere": attacker.sign(claims, {"jku": "http://127.0.0.1:9/jwks"}),
            "embedded jwk": attacker.sign(
                claims, {"jwk": {k: attacker.private_jwk()[k] for k in ("kty", "n", "e")}}
            ),
            "16 kB token": self.sign(padding="x" * 16_000),
            "opaque token": "2YotnFZFEjr1zCsicMWpAA",
            "RS384 (not on the allow-list)": self.signing_key.sign(claims, alg="RS384"),
            "ES256 header, an RSA key's kid": unsigned_token(
                {"alg": "ES256", "typ": "at+jwt", "kid": self.signing_key.kid}, claims
            )
            + b64url(bytes(64)),
        }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`alg: none` and other hand-made tokens PyJWT refuses to write."""
    part = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{part(header)}.{part(claims)}."
