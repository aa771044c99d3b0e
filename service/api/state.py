"""What the routes need from the process they run in, assembled by `service.gateway`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.api.console import SignIn
from service.api.models import ModelCatalog
from service.api.serving_chat import ChatCompletions
from service.api.serving_reads import ReadService
from service.audit import AuditSink
from service.config import Settings
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue
from service.security.authenticate import Authenticator

Readiness = Callable[[], Awaitable[dict[str, bool]]]


@dataclass
class AppState:
    settings: Settings
    model_id: str
    queue: GatewayQueue
    metrics: ServiceMetrics
    chat: ChatCompletions
    readiness: Readiness
    catalog: ModelCatalog | None = None  # default: the chat endpoint's
    audit: AuditSink | None = None  # one event per audited request
    auth: Authenticator | None = None  # keys (and IdP tokens); None: auth off (local use)
    sign_in: SignIn | None = None  # the console's sign-in at the IdP, when configured
    reads: ReadService | None = None  # study reads (/v1/dicom/reads)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def models(self) -> ModelCatalog:
        return self.catalog or self.chat.catalog
