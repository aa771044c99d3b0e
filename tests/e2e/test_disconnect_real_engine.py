"""A client that leaves mid-stream stops the real transformers engine within moments."""

from __future__ import annotations

import asyncio
import time

import httpx

from service.config import Settings
from service.embedded import build_embedded
from tests.conftest import ThreadedServer, image_message, png_data_url


async def test_disconnect_aborts_transformers_generation(tiny_checkpoint):
    service = build_embedded(
        Settings(model=tiny_checkpoint, served_model_name="tiny", max_concurrency=1)
    )
    engine = service.engine
    body = {
        "model": "tiny",
        "messages": image_message(png_data_url()),
        "max_tokens": 1800,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
    }
    with ThreadedServer(service.app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:

            async def read_a_little() -> None:
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_lines():
                        await asyncio.sleep(10)  # holds the connection open, generating

            task = asyncio.create_task(read_a_little())
            while not engine._aborts:
                await asyncio.sleep(0.01)
            task.cancel()
            left = time.monotonic()
            aborted = 'gmaivl_engine_aborts_total{reason="cancelled"} 1.0'
            metrics = ""
            while aborted not in metrics and time.monotonic() - left < 1.0:
                metrics = (await http.get("/metrics")).text
            assert aborted in metrics, "the engine kept generating for a client that left"
            assert not engine._aborts  # its decode thread has returned
            # the 1800-token answer (about 7 s here) never finished
            assert 'gmaivl_completion_tokens_total{model="tiny"}' not in metrics
