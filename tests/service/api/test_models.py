"""The model catalog: known vs live, 404 vs 503 model_unavailable, the cache."""

from __future__ import annotations

import time

import pytest

from service import errors
from service.api.models import ModelCatalog
from service.queue.protocols import ModelSeen


def announced(*seen: ModelSeen):
    calls = []

    async def read() -> list[ModelSeen]:
        calls.append(1)
        return list(seen)

    read.calls = calls  # type: ignore[attr-defined]
    return read


async def test_embedded_catalog_serves_its_configured_models():
    catalog = ModelCatalog({"base": None, "adapter": "base"})
    assert [(m.id, m.parent) for m in await catalog.live()] == [
        ("adapter", "base"),
        ("base", None),
    ]
    await catalog.check("adapter")
    with pytest.raises(errors.ModelNotFound):
        await catalog.check("other")


async def test_known_model_without_worker_is_unavailable_unknown_is_not_found():
    now = time.time()
    catalog = ModelCatalog(
        {"configured": None},
        announced(ModelSeen("live", None, 2, now), ModelSeen("gone", None, 0, now - 60)),
    )
    assert [m.id for m in await catalog.live()] == ["live"]
    assert (await catalog.check("live")).live_workers == 2
    for model in ("gone", "configured"):
        with pytest.raises(errors.ModelUnavailable) as err:
            await catalog.check(model)
        response = errors.to_error_response(err.value)
        assert response.status_code == 503
        assert response.body["error"]["code"] == "model_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
    with pytest.raises(errors.ModelNotFound):
        await catalog.check("never-seen")


async def test_registry_read_at_most_once_per_cache_period():
    read = announced(ModelSeen("m", None, 1, time.time()))
    catalog = ModelCatalog({}, read, cache_seconds=60)
    for _ in range(5):
        await catalog.check("m")
    assert len(read.calls) == 1  # type: ignore[attr-defined]
