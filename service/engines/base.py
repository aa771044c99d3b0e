"""The engine seam: what a worker hands an engine, and what it gets back.

An engine turns one `GenerationRequest` into an async stream of `Delta`s that
ends with exactly one `Finish`. It may raise `errors.InvalidRequest` before the
first delta (e.g. the prompt does not fit the context) and `errors.EngineError`
for anything else. `abort(request_id)` stops a running generation promptly and
frees its slot; the stream then ends without a `Finish`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from service import errors
from service.core.generation import GenerationEvent, GenerationRequest


class Engine(Protocol):
    name: str
    max_concurrency: int

    async def start(self) -> None: ...

    def ready(self) -> bool: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]: ...

    async def abort(self, request_id: str) -> None: ...

    async def stop(self) -> None: ...

    def collectors(self) -> list[Any]:
        """Prometheus collectors of the engine's own series, shown on the worker's /metrics."""
        ...


def refuse_structured_output(request: GenerationRequest, engine: str) -> None:
    """For engines without constrained decoding: a clear 400 rather than free text."""
    if request.sampling.response_format is not None:
        raise errors.InvalidRequest(
            f"response_format {request.sampling.response_format['type']!r} needs the vllm "
            f"engine; this model is served by the {engine} engine.",
            param="response_format",
            code="unsupported_response_format",
        )
