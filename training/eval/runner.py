"""Send every benchmark item to an OpenAI-compatible endpoint, concurrently and resumably.

- `concurrency` requests in flight; temperature 0; header `X-Priority: batch`
  (our gateway's research lane; other servers ignore it).
- 429, 5xx and connection errors are retried up to `retries` times, waiting
  `Retry-After` seconds when the server sends it (capped at 60), else an
  exponential backoff. Other 4xx answers are final: the item is recorded with
  its error and scored wrong.
- Every answer is appended to a JSONL cache as soon as it arrives; a rerun
  skips the items already there, so an interrupted run resumes where it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from training.eval.datasets import EvalItem
from training.eval.prompts import build_messages

RETRYABLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Prediction:
    key: str
    prediction: str
    error: str | None = None  # why there is no prediction (a final 4xx, retries exhausted)


@dataclass
class RunnerConfig:
    base_url: str
    model: str
    api_key: str = "unused"
    concurrency: int = 8
    max_tokens: int = 64
    retries: int = 5
    timeout: float = 300.0


def load_cache(path: Path) -> dict[str, Prediction]:
    """Predictions already made; a torn last line (the run was killed mid-write) is ignored."""
    cached: dict[str, Prediction] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            cached[record["key"]] = Prediction(**record)
    return cached


class EvalRunner:
    def __init__(
        self,
        config: RunnerConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.sleep = sleep
        self.transport = transport

    async def run(
        self, items: list[EvalItem], cache_path: Path, progress: bool = True
    ) -> dict[str, Prediction]:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        done = load_cache(cache_path)
        todo = [item for item in items if item.key not in done]
        limit = asyncio.Semaphore(self.config.concurrency)
        bar = tqdm(
            total=len(items),
            initial=len(items) - len(todo),
            disable=not progress,
            desc="eval",
            unit="item",
        )
        headers = {"Authorization": f"Bearer {self.config.api_key}", "X-Priority": "batch"}
        async with httpx.AsyncClient(
            base_url=self.config.base_url.rstrip("/"),
            headers=headers,
            timeout=self.config.timeout,
            transport=self.transport,
        ) as http:
            with cache_path.open("a", encoding="utf-8") as cache:
                if cache.tell() and not cache_path.read_bytes().endswith(b"\n"):
                    cache.write("\n")  # end a line torn by an interrupted run

                async def one(item: EvalItem) -> None:
                    async with limit:
                        prediction = await self._predict(http, item)
                    done[item.key] = prediction
                    cache.write(json.dumps(prediction.__dict__, ensure_ascii=False) + "\n")
                    cache.flush()
                    bar.update(1)

                await asyncio.gather(*(one(item) for item in todo))
        bar.close()
        return done

    async def _predict(self, http: httpx.AsyncClient, item: EvalItem) -> Prediction:
        body = {
            "model": self.config.model,
            "messages": build_messages(item),
            "max_tokens": self.config.max_tokens,
            "temperature": 0,
        }
        error = "no attempt"
        for attempt in range(self.config.retries + 1):
            try:
                response = await http.post("/chat/completions", json=body)
            except httpx.TransportError as exc:
                error, wait = f"connection error: {type(exc).__name__}", None
            else:
                if response.status_code == 200:
                    content = response.json()["choices"][0]["message"]["content"] or ""
                    return Prediction(item.key, content)
                error = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in RETRYABLE:
                    return Prediction(item.key, "", error)
                wait = _retry_after(response)
            if attempt < self.config.retries:
                await self.sleep(wait if wait is not None else min(0.5 * 2**attempt, 30.0))
        return Prediction(item.key, "", f"gave up after {self.config.retries} retries; {error}")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), 60.0)
    except (KeyError, ValueError):
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
