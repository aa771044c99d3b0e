"""The compose core through containers, end to end: `podman-compose up` of
docker-compose.yml (with compose.debian.yml where Redis and Orthanc were built
from Debian's packages), the images `make images` builds, the trained demo model
(trained once by the worker container into its cache volume, which outlives
`down`), and Orthanc as the PACS.

Checked: a chat completion with an image and one with a DICOM file answered by
gateway -> Redis -> worker containers with exactly what `gmai-vl serve` answers on
the same weights; a study read to `completed` with its SR stored in the Orthanc
container; `/metrics` of the gateway and the worker; every container's
HEALTHCHECK (`podman healthcheck run`); the worker container killed with a
request waiting, restarted, and the request answered."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from pydicom.data import get_testdata_file

from service.processes import free_port, stop_process, wait_ready
from tests.deploy import containers as c
from tests.deploy.assets import ROOT
from tests.e2e.test_dicom_reads import make_study

PROJECT = c.COMPOSE_PROJECT
MODEL = "gmai-vl-demo"
ORTHANC_AUTH = ("gmaivl", "orthanc-dev-only")  # docker-compose.yml's dev password
DEMO, HELD_OUT = c.DEMO, c.HELD_OUT
QUESTION = "Where is the lesion located?"
DICOM = "CT_small.dcm"
READY_TIMEOUT = c.DEMO_TIMEOUT  # cold: the worker trains the demo model first

pytestmark = pytest.mark.timeout(c.BUILD_TIMEOUT + READY_TIMEOUT + 900)


@dataclass
class Stack:
    url: str
    orthanc: str
    env: dict[str, str]
    files: list[str]
    cache: Path  # the worker's cache volume on this host

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return compose(self.env, self.files, *args, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"


def compose(env, files, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).parent / "podman-compose"
    result = subprocess.run(
        [str(binary), "-p", PROJECT, *files, *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    c.require_podman()
    c.build_images()
    env = {
        **c.env(),
        "GMAIVL_HOST_PORT": str(free_port()),
        "ORTHANC_HOST_PORT": str(free_port()),
        "ORTHANC_DICOM_HOST_PORT": str(free_port()),
    }
    files = ["-f", "docker-compose.yml"]
    if c.podman("image", "exists", c.REDIS_DEBIAN, check=False).returncode == 0:
        files += ["-f", "compose.debian.yml"]
    compose(env, files, "down", timeout=300)  # a previous run cut short
    compose(env, files, "up", "-d")
    made = Stack(
        url=f"http://127.0.0.1:{env['GMAIVL_HOST_PORT']}",
        orthanc=f"http://127.0.0.1:{env['ORTHANC_HOST_PORT']}",
        env=env,
        files=files,
        cache=c.demo_volume_path(),
    )
    try:
        try:
            wait_ready(made.url, timeout=READY_TIMEOUT)
        except TimeoutError:
            logs = c.podman("logs", "--tail", "60", made.container("worker"), check=False)
            raise AssertionError(f"stack not ready:\n{logs.stdout}{logs.stderr}") from None
        yield made
    finally:
        compose(env, files, "down", timeout=300)  # the cache volume stays: warm next time


def chat(base_url: str, url: str, question: str = QUESTION, timeout: float = 300) -> str:
    client = OpenAI(base_url=base_url + "/v1", api_key="unused", timeout=timeout, max_retries=0)
    r = client.chat.completions.create(
        model=MODEL,
        max_tokens=32,
        temperature=0,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": question},
        ]}],
    )  # fmt: skip
    return r.choices[0].message.content


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def requests(stack: Stack) -> dict[str, str]:
    return {
        "image": data_url("image/png", (stack.cache / HELD_OUT).read_bytes()),
        "dicom": data_url(
            "application/dicom", Path(get_testdata_file("CT_small.dcm")).read_bytes()
        ),
    }


@pytest.fixture(scope="module")
def served(stack: Stack, requests, tmp_path_factory) -> dict[str, str]:
    """What `gmai-vl serve` on this host answers with the worker's own weights."""
    port = free_port()
    home = tmp_path_factory.mktemp("serve")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--model", str(stack.cache / DEMO),
         "--served-model-name", MODEL, "--port", str(port)],
        cwd=ROOT, env={**os.environ, "XDG_CACHE_HOME": str(home)},
        stdout=(home / "serve.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=300, process=process)
        return {name: chat(url, body) for name, body in requests.items()}
    finally:
        stop_process(process)


def test_chat_with_an_image_and_a_dicom_answers_as_gmai_vl_serve(stack, requests, served):
    assert "lower right" in served["image"], served  # the README's held-out answer
    for name, body in requests.items():
        assert chat(stack.url, body) == served[name], name


def test_a_study_read_completes_with_its_sr_in_the_orthanc_container(stack):
    study = make_study()
    for data in study.files:
        r = httpx.post(stack.orthanc + "/instances", content=data, auth=ORTHANC_AUTH, timeout=30)
        assert r.status_code == 200, r.text
    body = {"model": MODEL, "study_instance_uid": study.uid, "max_tokens": 8}
    r = httpx.post(stack.url + "/v1/dicom/reads", json=body, timeout=30)
    assert r.status_code == 202, r.text
    read_id = r.json()["id"]
    deadline = time.monotonic() + 600
    while (read := httpx.get(f"{stack.url}/v1/dicom/reads/{read_id}", timeout=10).json())[
        "status"
    ] not in ("completed", "failed"):
        assert time.monotonic() < deadline, read
        time.sleep(0.5)
    assert read["status"] == "completed", read.get("error")
    assert read["answer"] and read["sr"]["stored"] is True
    found = httpx.get(
        f"{stack.orthanc}/dicom-web/studies/{study.uid}/series",
        params={"Modality": "SR"}, auth=ORTHANC_AUTH, timeout=30,
    ).json()  # fmt: skip
    assert [s["0020000E"]["Value"][0] for s in found] == [read["sr"]["series_instance_uid"]]


def test_metrics_are_scraped_from_gateway_and_worker(stack, requests):
    chat(stack.url, requests["image"])
    gateway = families(httpx.get(stack.url + "/metrics", timeout=10).text)
    chats = [
        s.value
        for s in gateway["gmaivl_requests"].samples
        if s.name == "gmaivl_requests_total" and s.labels.get("route") == "/v1/chat/completions"
    ]
    assert sum(chats) >= 1
    assert max(s.value for s in gateway["gmaivl_live_workers"].samples) >= 1
    probe = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:9090/metrics').read().decode())"
    )
    worker = c.podman("exec", stack.container("worker"), "python", "-c", probe).stdout
    assert any(name.startswith("gmaivl_") for name in families(worker))


def families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.mark.parametrize("service", ["gateway", "worker", "redis", "orthanc"])
def test_every_health_check_passes(stack, service):
    result = c.podman("healthcheck", "run", stack.container(service), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_request_waiting_while_the_worker_container_is_killed_is_answered_after_restart(
    stack, requests, served
):
    worker = stack.container("worker")
    c.podman("kill", worker)
    answers: list[str] = []
    waiting = threading.Thread(target=lambda: answers.append(chat(stack.url, requests["image"])))
    waiting.start()
    time.sleep(3)
    assert waiting.is_alive() and not answers  # queued in Redis, no worker
    c.podman("start", worker)
    waiting.join(timeout=600)
    assert answers == [served["image"]]
