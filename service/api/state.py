"""What the routes need from the process they run in, assembled by `service.gateway`
(the composition root: it builds every part below and hands them in)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.api.console import SignIn
from service.api.models import ModelCatalog
from service.api.responses_api.serving import ResponsesService
from service.api.serving_chat import ChatCompletions
from service.audit import AuditSink
from service.config import Settings
from service.media.dicomweb_client import DicomWebClient
from service.media.resolve import MediaResolver
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue
from service.reads.service import ReadService
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
    models: ModelCatalog  # which models it answers for
    media: MediaResolver  # image parts -> images (chat, render)
    dicomweb: dict[str, DicomWebClient] = field(default_factory=dict)  # by PACS name (browse)
    audit: AuditSink | None = None  # one event per audited request
    auth: Authenticator | None = None  # keys (and IdP tokens); None: auth off (local use)
    sign_in: SignIn | None = None  # the console's sign-in at the IdP, when configured
    reads: ReadService | None = None  # study reads (/v1/dicom/reads)
    responses: ResponsesService | None = None  # the Responses API (/v1/responses)
    created: int = field(default_factory=lambda: int(time.time()))
