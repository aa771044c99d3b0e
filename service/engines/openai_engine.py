"""Forward to an existing OpenAI-compatible server (e.g. a running `vllm serve`).

For teams that already run an inference server: our gateway keeps what it adds
(priority lanes, admission, deadlines, DICOM, audit) and this engine relays the
chat upstream, streaming. Images travel as PNG data URLs. Cancellation closes
the upstream request, which a vLLM server treats as an abort. Upstream errors
become ours; their messages are not relayed (they may quote the request).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from service import errors
from service.core.chat_format import to_openai_messages
from service.core.generation import (
    MIN_LOGPROB,
    Delta,
    Finish,
    GenerationEvent,
    GenerationRequest,
    ImageInput,
    Logprob,
    TokenLogprobs,
    Usage,
)
from service.http_transport import ResetTolerantTransport

log = logging.getLogger("gmaivl.engine")


class OpenAIForwardEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 32,
        timeout: float = 600.0,
        startup_timeout: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency = max_concurrency
        self.startup_timeout = startup_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=ResetTolerantTransport(limits=httpx.Limits(max_connections=max_concurrency)),
        )
        self._responses: dict[str, httpx.Response] = {}
        self._aborted: set[str] = set()
        self._ready = False

    async def start(self) -> None:
        """Ready once the upstream lists the model (it may still be starting)."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                response = await self._client.get("/models")
                if response.status_code == 200:
                    ids = [m.get("id") for m in response.json().get("data", [])]
                    if self.model in ids:
                        break
                    raise errors.NotReady(f"The upstream server does not serve {self.model!r}.")
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise errors.NotReady(f"The upstream server at {self.base_url} did not answer.")
            await asyncio.sleep(1.0)
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if not self._ready:
            raise errors.NotReady("The upstream server is not ready.")
        body = await asyncio.to_thread(upstream_body, request, self.model)
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise upstream_error(response)
                self._responses[request.request_id] = response
                async for event in _events(response):
                    yield event
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if request.request_id in self._aborted:
                return  # we closed it: aborted, no Finish (engines/base.py)
            raise errors.EngineError("The upstream server failed.") from exc
        finally:
            self._responses.pop(request.request_id, None)
            self._aborted.discard(request.request_id)

    async def abort(self, request_id: str) -> None:
        """Closing the upstream stream is what makes the upstream server abort."""
        response = self._responses.get(request_id)
        if response is not None:
            self._aborted.add(request_id)
            await response.aclose()

    async def stop(self) -> None:
        self._ready = False
        await self._client.aclose()

    def collectors(self) -> list[Any]:
        return []


async def _events(response: httpx.Response) -> AsyncIterator[GenerationEvent]:
    """Server-sent chunks -> Delta..., Finish (usage comes in the last chunk)."""
    reason: str | None = None
    usage: Usage | None = None
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise errors.EngineError("The upstream server failed mid-answer.")
        if chunk.get("usage"):
            u = chunk["usage"]
            usage = Usage(u["prompt_tokens"], u["completion_tokens"])
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            logprobs = _logprobs(choice.get("logprobs"))
            if text or logprobs:
                yield Delta(text or "", logprobs)
            reason = choice.get("finish_reason") or reason
    if reason is None:
        return  # closed before the end: aborted (no Finish, engines/base.py)
    yield Finish("length" if reason == "length" else "stop", usage or Usage(0, 0))


def _logprobs(raw: Any) -> tuple[TokenLogprobs, ...]:
    """The upstream chunk's `logprobs.content` as ours (token text and log probability;
    bytes are rebuilt from the text, as every engine here does)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
        return ()
    return tuple(
        TokenLogprobs(_logprob(entry), tuple(_logprob(top) for top in _list(entry, "top_logprobs")))
        for entry in raw["content"]
        if isinstance(entry, dict)
    )


def _logprob(entry: Any) -> Logprob:
    """One upstream entry; a missing or odd value is the floor, not a failed answer."""
    if not isinstance(entry, dict):
        return Logprob.of("", MIN_LOGPROB)
    value = entry.get("logprob")
    number = float(value) if isinstance(value, int | float) else MIN_LOGPROB
    data = entry.get("bytes")
    raw = bytes(data) if isinstance(data, list) and all(
        isinstance(b, int) and 0 <= b < 256 for b in data
    ) else None  # fmt: skip
    return Logprob.of(str(entry.get("token", "")), number, raw)


def _list(entry: dict[str, Any], key: str) -> list[Any]:
    value = entry.get(key)
    return value if isinstance(value, list) else []


def upstream_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """Our template-form chat back in OpenAI form, images as PNG data URLs."""
    messages = to_openai_messages(request.messages, map(png_data_url, request.images))
    s = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.response_format is not None:
        body["response_format"] = s.response_format
    if s.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = s.logprobs
    return body


def png_data_url(image: ImageInput) -> str:
    buffer = io.BytesIO()
    image.to_pil().save(buffer, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def upstream_error(response: httpx.Response) -> errors.ServiceError:
    status = response.status_code
    log.warning("upstream answered HTTP %d", status)
    if status in (400, 413, 422):
        return errors.InvalidRequest(
            f"The upstream model server rejected the request (HTTP {status}).",
            code="upstream_rejected",
        )
    if status == 429:
        retry_after = response.headers.get("retry-after", "")
        return errors.Overloaded(
            "The upstream model server is busy; retry later.",
            retry_after=int(retry_after) if retry_after.isdigit() else 5,
        )
    if status in (502, 503, 504):
        return errors.NotReady("The upstream model server is unavailable; retry later.")
    return errors.EngineError(f"The upstream model server failed (HTTP {status}).")
