"""Locust users for realistic GMAI-VL traffic (docs/benchmarks.md, "Load tests").

    PacsViewerUser  a PACS viewer: DICOM and PNG images, mostly `routine`, with
                    occasional bursts of `stat` reads (an emergency case opened)
    SdkChatUser     a chat front end through the official OpenAI SDK, streaming;
                    reports time to first token as its own entry
    BatchEvalUser   an evaluation job on the `batch` lane, steady pace

Run by `loadtest/run.py` (make loadtest), or by hand:

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8000

Settings: GMAIVL_LOADTEST_IMAGES (image directory, see traffic.py),
GMAIVL_LOADTEST_MAX_TOKENS (default 32). The model is the first of /v1/models.
A 429 is counted as a failure named "overloaded (429)": under overload that is
the gateway refusing early, as designed, and the report shows how often.
"""

from __future__ import annotations

import os
import random
import time

from locust import FastHttpUser, User, between, constant_pacing, task

from loadtest.traffic import chat_body, load_images

MAX_TOKENS = int(os.environ.get("GMAIVL_LOADTEST_MAX_TOKENS", "32"))
IMAGES = load_images()
DICOM = [image for image in IMAGES if image.is_dicom] or IMAGES
PICTURES = [image for image in IMAGES if not image.is_dicom] or IMAGES
STAT_BURST = 3


def served_model(client) -> str:
    response = client.get("/v1/models", name="/v1/models")
    models = response.json()["data"] if response.status_code == 200 else []
    if not models:
        raise RuntimeError(f"no model served at /v1/models ({response.status_code})")
    return models[0]["id"]


class ChatUser(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        self.model = served_model(self.client)
        self.rng = random.Random()

    def chat(self, name: str, lane: str, image, max_tokens: int = MAX_TOKENS) -> None:
        body = chat_body(self.model, image, max_tokens=max_tokens, rng=self.rng)
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers={"X-Priority": lane},
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code == 429:
                response.failure("overloaded (429)")
            elif response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif not response.json()["choices"][0]["message"]["content"]:
                response.failure("empty answer")


class PacsViewerUser(ChatUser):
    weight = 3
    wait_time = between(0.5, 2.0)

    @task(6)
    def routine_dicom(self) -> None:
        self.chat("pacs routine dicom", "routine", self.rng.choice(DICOM))

    @task(3)
    def routine_png(self) -> None:
        self.chat("pacs routine png", "routine", self.rng.choice(PICTURES))

    @task(1)
    def stat_burst(self) -> None:
        for _ in range(STAT_BURST):
            self.chat("pacs stat dicom", "stat", self.rng.choice(DICOM))


class BatchEvalUser(ChatUser):
    weight = 1
    wait_time = constant_pacing(1.0)

    @task
    def evaluate(self) -> None:
        self.chat("batch eval", "batch", self.rng.choice(IMAGES), max_tokens=8)


class SdkChatUser(User):
    """The official openai SDK, streaming; each call is reported to locust by hand."""

    weight = 2
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        import openai

        self.sdk = openai.OpenAI(base_url=self.host + "/v1", api_key="loadtest", max_retries=0)
        self.model = self.sdk.models.list().data[0].id
        self.rng = random.Random()

    @task
    def stream(self) -> None:
        import openai

        body = chat_body(self.model, self.rng.choice(IMAGES), max_tokens=MAX_TOKENS, rng=self.rng)
        del body["model"]  # passed on its own below
        started = time.perf_counter()
        first_token: float | None = None
        length, error = 0, None
        try:
            stream = self.sdk.chat.completions.create(
                model=self.model, stream=True, extra_headers={"X-Priority": "routine"}, **body
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if first_token is None:
                        first_token = time.perf_counter()
                    length += len(chunk.choices[0].delta.content)
        except openai.RateLimitError as exc:
            error = RuntimeError("overloaded (429)")
            error.__cause__ = exc
        except openai.OpenAIError as exc:
            error = exc
        if error is None and first_token is None:
            error = RuntimeError("empty stream")
        elapsed = (time.perf_counter() - started) * 1000
        fire = self.environment.events.request.fire
        fire(
            request_type="SDK",
            name="sdk chat stream",
            response_time=elapsed,
            response_length=length,
            exception=error,
            context={},
        )
        if first_token is not None:
            fire(
                request_type="SDK",
                name="sdk time to first token",
                response_time=(first_token - started) * 1000,
                response_length=0,
                exception=None,
                context={},
            )
