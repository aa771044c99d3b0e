"""Settings -> the parts a process is made of: its engine, its queue sides and
its key store, token verifier and tenant limiter. Heavy parts are imported only
when chosen, so a gateway never imports torch."""

from __future__ import annotations

from pathlib import Path

import httpx

from service.api.models import ModelCatalog
from service.config import Settings
from service.engines.base import Engine
from service.engines.checkpoint import check_servable
from service.media.fetch import HostPolicy, SafeFetcher
from service.metrics import ServiceMetrics
from service.queue.memory import InProcessJobQueue
from service.queue.protocols import GatewayQueue, WorkerQueue
from service.reads.store import InMemoryReadStore, ReadStore
from service.responses.store import InMemoryResponseStore, ResponseStore
from service.security.authenticate import Authenticator
from service.security.jwks import FetchJson, JwksCache
from service.security.keystore import AuthConfigError, KeyStore, key_store_for
from service.security.limits import InMemoryTenantLimiter, TenantLimiter
from service.security.tokens import TokenVerifier


def _checkpoint(settings: Settings) -> Path:
    """The checkpoint an in-process engine loads, checked before any weight is read."""
    if settings.model is None:
        raise ValueError(f"the {settings.engine} engine needs a checkpoint (--model)")
    check_servable(settings.model)
    return settings.model


def make_engine(settings: Settings) -> Engine:
    if settings.lora and settings.engine not in ("transformers", "vllm"):
        raise ValueError("--lora needs the transformers or the vllm engine")
    if settings.engine == "fake":
        from service.engines.fake import FakeEngine

        return FakeEngine(
            token_interval=settings.fake_token_interval, max_concurrency=settings.max_concurrency
        )
    if settings.engine == "transformers":
        from service.engines.transformers_engine import TransformersEngine

        return TransformersEngine(
            _checkpoint(settings),
            device=settings.device,
            max_concurrency=settings.max_concurrency,
            adapters=settings.lora_adapters(),
        )
    if settings.engine == "vllm":
        from service.engines.vllm_engine import VllmEngine

        return VllmEngine(
            _checkpoint(settings),
            settings.vllm,
            max_num_seqs=settings.max_concurrency,
            limit_images_per_prompt=max(1, settings.images.max_images_per_request),
            adapters=settings.lora_adapters(),
        )
    if settings.engine == "openai":
        from service.engines.openai_engine import OpenAIForwardEngine

        if settings.upstream_url is None:
            raise ValueError("the openai engine needs --upstream-url")
        key = settings.upstream_api_key
        return OpenAIForwardEngine(
            settings.upstream_url,
            settings.upstream_model or settings.model_id(),
            api_key=key.get_secret_value() if key is not None else None,
            max_concurrency=settings.max_concurrency,
        )
    raise ValueError(f"unknown engine {settings.engine!r} (transformers | vllm | openai | fake)")


def model_catalog(settings: Settings) -> ModelCatalog:
    """The process's own model and its LoRA adapters (parent: the base)."""
    model_id = settings.model_id()
    return ModelCatalog({model_id: None, **dict.fromkeys(settings.lora_adapters(), model_id)})


def in_process_queue(settings: Settings) -> InProcessJobQueue:
    """Both sides in one object: the embedded default."""
    return InProcessJobQueue(
        max_depth=settings.queue_max_depth,
        aging_seconds=settings.aging_seconds,
        heartbeat_interval=settings.heartbeat_interval,
    )


def redis_gateway_queue(settings: Settings, model_id: str) -> GatewayQueue:
    from service.redis.gateway_queue import RedisGatewayQueue

    assert settings.redis_url is not None, "the Redis queue needs --redis-url"
    return RedisGatewayQueue(
        settings.redis_url,
        model=model_id,
        max_depth=settings.queue_max_depth,
        heartbeat_interval=settings.heartbeat_interval,
        result_ttl=settings.result_ttl,
    )


def redis_worker_queue(
    settings: Settings, model_id: str, metrics: ServiceMetrics | None = None
) -> WorkerQueue:
    from service.redis.worker_queue import RedisWorkerQueue

    assert settings.redis_url is not None, "the Redis queue needs --redis-url"
    return RedisWorkerQueue(
        settings.redis_url,
        model=model_id,
        aging_seconds=settings.aging_seconds,
        adapters=list(settings.lora_adapters()),
        visibility_timeout=settings.visibility_timeout,
        heartbeat_interval=settings.heartbeat_interval,
        max_deliveries=settings.max_deliveries,
        result_ttl=settings.result_ttl,
        flush_interval=settings.event_flush_interval,
        metrics=metrics,
    )


def make_security(settings: Settings) -> tuple[KeyStore | None, TenantLimiter | None]:
    """The key store and the tenant limiter (shared in Redis when the queue is), or
    (None, None) when authentication is off: without tenants there is nothing to limit.
    Tokens (GMAIVL_OIDC_ISSUER) need the key file too: it lists the tenants they map to."""
    if settings.oidc.enabled and (settings.auth == "off" or settings.api_keys_file is None):
        raise AuthConfigError(
            "GMAIVL_OIDC_ISSUER needs GMAIVL_API_KEYS_FILE (its tenants and claim_tenants "
            "are what tokens map to) and cannot be combined with GMAIVL_AUTH=off"
        )
    keys = key_store_for(
        settings.auth,
        settings.api_keys_file,
        settings.host,
        settings.api_keys_reload_interval,
        settings.max_tenant_labels,
    )
    if keys is None:
        return None, None
    if settings.redis_url is not None:
        from service.redis.tenant_limits import RedisTenantLimiter

        return keys, RedisTenantLimiter(settings.redis_url)
    return keys, InMemoryTenantLimiter()


def make_read_store(settings: Settings) -> ReadStore:
    """Study reads live where the queue does: in memory, or in Redis (any gateway answers)."""
    if settings.redis_url is None:
        return InMemoryReadStore()
    from service.redis.read_store import RedisReadStore

    return RedisReadStore(settings.redis_url, settings.read_ttl)


def make_response_store(settings: Settings) -> ResponseStore:
    """Stored responses live where the queue does: in memory (bounded), or in Redis
    (any gateway replica answers); both forget them after `response_ttl`."""
    if settings.redis_url is None:
        return InMemoryResponseStore(settings.max_stored_responses, settings.response_ttl)
    from service.redis.response_store import RedisResponseStore

    return RedisResponseStore(settings.redis_url, settings.response_ttl)


IDP_JSON_TYPES = frozenset({"application/json", "application/jwk-set+json"})


def idp_fetch(fetcher: SafeFetcher, issuer: str) -> FetchJson:
    """GETs of the IdP's discovery document and keys through the gateway's SafeFetcher:
    the issuer's host only, whatever address it resolves to (hospital IdPs sit on
    internal networks); jwks.py keeps every URL on the issuer's origin."""
    policy = HostPolicy.of([httpx.URL(issuer).host], ["0.0.0.0/0", "::/0"])

    async def get(url: str) -> bytes:
        fetched = await fetcher.fetch(
            url,
            policy=policy,
            accept="application/json",
            content_types=IDP_JSON_TYPES,
            param="oidc",
        )
        return fetched.body

    return get


def make_authenticator(
    settings: Settings, keys: KeyStore | None, fetcher: SafeFetcher
) -> Authenticator | None:
    """Keys, plus the IdP's access tokens when GMAIVL_OIDC_ISSUER is set; None: auth off."""
    if keys is None:
        return None
    oidc = settings.oidc
    if oidc.issuer is None or oidc.audience is None:
        return Authenticator(keys)
    jwks = JwksCache(
        oidc.issuer,
        idp_fetch(fetcher, oidc.issuer),
        refresh_interval=oidc.jwks_refresh_interval,
        max_age=oidc.jwks_max_age,
    )
    tokens = TokenVerifier(
        oidc.issuer,
        oidc.audience,
        jwks,
        leeway=oidc.leeway,
        max_token_bytes=oidc.max_token_bytes,
        cache_size=oidc.verified_cache_size,
    )
    return Authenticator(
        keys, tokens, tenant_claim=oidc.tenant_claim, required_scopes=oidc.required_scopes
    )
