"""Webhook delivery: the finished read object, POSTed to the client's URL.

The URL must pass the SafeFetcher rules (host on GMAIVL_FETCH_ALLOWED_HOSTS,
address checks, timeouts). The body is signed: `X-GMAIVL-Signature:
sha256=<hex HMAC-SHA256 of the exact body bytes under GMAIVL_WEBHOOK_SECRET>`;
receivers recompute it and compare in constant time. Any 2xx is delivered;
other answers and transport failures are retried with doubling backoff up to
`max_attempts`. The outcome (`delivered`, `failed`) is returned, never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from service import errors
from service.media.fetch import HostPolicy, SafeFetcher, parse_url

SIGNATURE_HEADER = "X-GMAIVL-Signature"
log = logging.getLogger("gmaivl.webhook")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def check_webhook_url(url: str, policy: HostPolicy) -> None:
    """At submission: a URL that could never be delivered to is a 400 now, not later."""
    target = parse_url(url, "webhook")
    if not policy.allows_host(target.host):
        raise errors.InvalidRequest(
            "The webhook host is not on the allow-list.",
            param="webhook",
            code="webhook_not_allowed",
        )


@dataclass(eq=False)
class WebhookSender:
    fetcher: SafeFetcher
    policy: HostPolicy
    secret: str
    max_attempts: int = 4
    backoff: float = 0.5

    async def deliver(self, url: str, payload: dict[str, Any], read_id: str) -> str:
        """POST `payload`; `delivered` or `failed` after the last attempt."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {SIGNATURE_HEADER: sign(self.secret, body), "X-GMAIVL-Read-Id": read_id}
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                posted = await self.fetcher.post(
                    url,
                    policy=self.policy,
                    content=body,
                    content_type="application/json",
                    headers=headers,
                    param="webhook",
                )
                if 200 <= posted.status_code < 300:
                    return "delivered"
                reason = f"HTTP {posted.status_code}"
            except errors.ServiceError as exc:
                reason = exc.code or "error"
            # The read id only: the URL may carry anything the client put in it.
            log.info("webhook of %s: attempt %d failed (%s)", read_id, attempt, reason)
            if attempt < self.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        return "failed"
