"""The runner's retry and resume rules, isolated with httpx's mock transport (the
end-to-end run against a real `gmai-vl serve` is tests/e2e/test_eval_cli.py)."""

from __future__ import annotations

import json

import httpx

from training.eval.datasets import EvalItem
from training.eval.runner import EvalRunner, RunnerConfig, load_cache


def items(n: int) -> list[EvalItem]:
    return [EvalItem(str(i), "closed", f"q{i}", "yes", b"\x89PNG fake") for i in range(n)]


def answer(text: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": text}}]})


def runner(handler, sleeps: list[float], **config) -> EvalRunner:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return EvalRunner(
        RunnerConfig(base_url="http://eval.test/v1", model="m", **config),
        sleep=sleep,
        transport=httpx.MockTransport(handler),
    )


async def test_retries_honour_retry_after_then_backoff(tmp_path):
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        body = json.loads(request.content)
        assert body["temperature"] == 0 and body["model"] == "m"
        assert request.headers["x-priority"] == "batch"
        if len(calls) == 1:
            return httpx.Response(
                429, headers={"Retry-After": "7"}, json={"error": {"message": "queue full"}}
            )
        if len(calls) == 2:
            return httpx.Response(503, json={"error": {"message": "not ready"}})
        return answer("Yes")

    sleeps: list[float] = []
    done = await runner(handler, sleeps).run(items(1), tmp_path / "p.jsonl", progress=False)
    assert done["0"].prediction == "Yes" and done["0"].error is None
    assert sleeps == [7.0, 1.0]  # the server's Retry-After, then backoff 0.5 * 2**1


async def test_client_errors_are_final_and_recorded(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": {"message": "unprocessable image"}})

    sleeps: list[float] = []
    done = await runner(handler, sleeps).run(items(1), tmp_path / "p.jsonl", progress=False)
    assert done["0"].error == "HTTP 422: unprocessable image" and sleeps == []


async def test_gives_up_after_the_retry_budget(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    done = await runner(handler, sleeps, retries=2).run(
        items(1), tmp_path / "p.jsonl", progress=False
    )
    assert done["0"].error.startswith("gave up after 2 retries")
    assert sleeps == [0.5, 1.0]


async def test_resume_skips_cached_items_and_tolerates_a_torn_line(tmp_path):
    cache = tmp_path / "p.jsonl"
    cache.write_text(
        json.dumps({"key": "0", "prediction": "No", "error": None}) + "\n" + '{"key": "1", "predic'
    )  # killed mid-write
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][0]["content"][-1]["text"]
        asked.append(text.split("\n")[0])
        return answer("Yes")

    done = await runner(handler, []).run(items(3), cache, progress=False)
    assert sorted(asked) == ["q1", "q2"]
    assert done["0"].prediction == "No" and done["2"].prediction == "Yes"
    assert set(load_cache(cache)) == {"0", "1", "2"}
