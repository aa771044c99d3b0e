"""A request's images, resolved concurrently and measured the same way for every
endpoint: `gmaivl_image_preprocess_seconds` for the whole set, and a refused image
counted in `gmaivl_rejections_total` by its error code. (Each image's own spans,
`image.resolve` / `image.fetch` / `image.decode`, are `media.resolve`'s.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from service import errors
from service.metrics import ServiceMetrics

T = TypeVar("T")


async def resolve_images(metrics: ServiceMetrics, work: Sequence[Awaitable[T]]) -> list[T]:
    started = time.perf_counter()
    try:
        done = await asyncio.gather(*work)
    except errors.ServiceError as exc:
        metrics.rejections.labels(exc.code or type(exc).__name__).inc()
        raise
    if work:
        metrics.image_preprocess.observe(time.perf_counter() - started)
    return list(done)
