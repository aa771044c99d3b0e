"""The token verifier against a real OpenID Provider (npm oidc-provider on loopback):
its discovery document and keys fetched through the gateway's SafeFetcher, its
real access tokens accepted, every forged or misdirected token refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service import errors
from service.components import idp_fetch
from service.media.fetch import FetchLimits, SafeFetcher
from service.security.jwks import FetchJson, JwksCache
from service.security.tokens import TokenVerifier
from tests.oidc import AUDIENCE, SERVICE_CLIENT, OidcProvider


@pytest.fixture
async def fetcher() -> AsyncIterator[SafeFetcher]:
    fetcher = SafeFetcher(FetchLimits(max_bytes=1 << 20))
    try:
        yield fetcher
    finally:
        await fetcher.aclose()


class CountingFetch:
    """The real fetch, counted: how often the IdP was asked."""

    def __init__(self, fetch: FetchJson) -> None:
        self.fetch = fetch
        self.urls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return await self.fetch(url)

    @property
    def key_fetches(self) -> int:
        return sum(1 for url in self.urls if not url.endswith("openid-configuration"))


def verifier_for(
    oidc_provider: OidcProvider, fetch: FetchJson, refresh_interval: float = 30.0, max_age=600.0
) -> TokenVerifier:
    jwks = JwksCache(
        oidc_provider.issuer, fetch, refresh_interval=refresh_interval, max_age=max_age
    )
    return TokenVerifier(oidc_provider.issuer, AUDIENCE, jwks, leeway=30)


def quotes_nothing(message: str, token: str) -> bool:
    pieces = [p for p in token.split(".") if len(p) >= 8]
    return not any(p[:12] in message for p in pieces)


async def test_a_real_client_credentials_token_verifies(oidc_provider, fetcher):
    verifier = verifier_for(oidc_provider, idp_fetch(fetcher, oidc_provider.issuer))
    verified = await verifier.verify(oidc_provider.client_credentials_token())
    assert verified.identity.sub == SERVICE_CLIENT
    assert verified.identity.iss == oidc_provider.issuer
    assert "gmaivl.reads" in verified.identity.scopes
    assert verified.claims["groups"] == ["radiology"]


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
async def test_each_accepted_algorithm_verifies_with_the_idps_key(oidc_provider, fetcher, alg):
    verifier = verifier_for(oidc_provider, idp_fetch(fetcher, oidc_provider.issuer))
    verified = await verifier.verify(oidc_provider.sign(alg=alg, sub=f"user-{alg}"))
    assert verified.identity.sub == f"user-{alg}"


async def test_every_refused_token_is_a_401_that_quotes_nothing_of_it(oidc_provider, fetcher):
    verifier = verifier_for(oidc_provider, idp_fetch(fetcher, oidc_provider.issuer))
    await verifier.verify(oidc_provider.sign())  # keys in hand: refusals below are the token's
    for case, token in oidc_provider.refused_tokens().items():
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await verifier.verify(token)
        message = caught.value.message
        assert errors.to_error_response(caught.value).status_code == 401, case
        assert quotes_nothing(message, token), (case, message)
        for value in ("elsewhere", "another-service", "nobody-published", "attacker", "xxxx"):
            assert value not in message, (case, message)


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(oidc_provider, fetcher):
    fetch = CountingFetch(idp_fetch(fetcher, oidc_provider.issuer))
    now = [1000.0]
    jwks = JwksCache(oidc_provider.issuer, fetch, refresh_interval=60.0, clock=lambda: now[0])
    verifier = TokenVerifier(oidc_provider.issuer, AUDIENCE, jwks)
    await verifier.verify(oidc_provider.sign())
    assert fetch.key_fetches == 1
    unknown = oidc_provider.refused_tokens()["unknown kid"]
    for _ in range(20):  # within the interval of the first fetch: nobody asks the IdP
        with pytest.raises(errors.AuthenticationFailed):
            await verifier.verify(unknown)
    assert fetch.key_fetches == 1
    now[0] += 61
    for _ in range(20):  # one refetch for the first unknown kid, then none
        with pytest.raises(errors.AuthenticationFailed):
            await verifier.verify(unknown)
    assert fetch.key_fetches == 2


async def test_a_verified_token_is_remembered_until_it_expires(oidc_provider, fetcher):
    now = [time.time()]
    jwks = JwksCache(oidc_provider.issuer, idp_fetch(fetcher, oidc_provider.issuer))
    verifier = TokenVerifier(oidc_provider.issuer, AUDIENCE, jwks, leeway=5, clock=lambda: now[0])
    token = oidc_provider.sign(exp=int(now[0]) + 60)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the cache, not a second RSA check
    now[0] += 66  # past exp + leeway
    with pytest.raises(errors.AuthenticationFailed) as caught:
        await verifier.verify(token)
    assert caught.value.code == "token_expired"


async def test_a_discovery_document_pointing_elsewhere_is_refused(oidc_provider, fetcher):
    real = idp_fetch(fetcher, oidc_provider.issuer)

    async def moved_keys(url: str) -> bytes:
        body = await real(url)
        if url.endswith("openid-configuration"):
            body = body.replace(
                oidc_provider.issuer.encode() + b"/jwks", b"http://127.0.0.2:9/jwks"
            )
        return body

    verifier = verifier_for(oidc_provider, moved_keys)
    with pytest.raises(errors.NotReady) as caught:
        await verifier.verify(oidc_provider.sign())
    assert caught.value.code == "identity_provider_unavailable"
    assert errors.to_error_response(caught.value).status_code == 503


# --- the IdP changes under a running verifier -----------------------------------------


@pytest.fixture
def changing_provider(tmp_path: Path) -> Iterator[OidcProvider]:
    server = OidcProvider(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_rotated_key_is_accepted_without_restart(changing_provider, fetcher):
    oidc_provider = changing_provider
    verifier = verifier_for(
        oidc_provider, idp_fetch(fetcher, oidc_provider.issuer), refresh_interval=0.0
    )
    old_token = oidc_provider.client_credentials_token()
    await verifier.verify(old_token)
    new_key = oidc_provider.rotate()
    new_token = oidc_provider.client_credentials_token()
    assert f'"kid":"{new_key.kid}"' in _header_json(new_token)
    verified = await verifier.verify(new_token)
    assert verified.identity.sub == SERVICE_CLIENT
    await verifier.verify(oidc_provider.sign(sub="still-published-old-key"))  # old kid stays


async def test_the_idp_stopped_leaves_the_cached_keys_in_use(changing_provider, fetcher):
    oidc_provider = changing_provider
    fetch = CountingFetch(idp_fetch(fetcher, oidc_provider.issuer))
    # Keys are "old" at once and may be refetched every time: each verification tries.
    verifier = verifier_for(oidc_provider, fetch, refresh_interval=0.0, max_age=0.001)
    await verifier.verify(oidc_provider.sign(sub="before"))
    oidc_provider.stop()
    time.sleep(0.01)
    verified = await verifier.verify(oidc_provider.sign(sub="while-the-idp-is-down"))
    assert verified.identity.sub == "while-the-idp-is-down"
    assert fetch.key_fetches >= 2  # it tried, failed, and kept the keys
    with pytest.raises(errors.AuthenticationFailed):
        await verifier.verify(oidc_provider.refused_tokens()["another key's signature"])


async def test_no_keys_and_no_idp_is_unavailable_not_refused(changing_provider, fetcher):
    oidc_provider = changing_provider
    token = oidc_provider.sign()
    oidc_provider.stop()
    verifier = verifier_for(oidc_provider, idp_fetch(fetcher, oidc_provider.issuer))
    with pytest.raises(errors.NotReady) as caught:
        await verifier.verify(token)
    assert caught.value.code == "identity_provider_unavailable"


def _header_json(token: str) -> str:
    import base64

    part = token.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode().replace(" ", "")
