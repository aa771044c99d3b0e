"""The dev overlay on podman: `kubectl kustomize k8s/overlays/dev`, played with
`podman kube play` (Redis, gateway and the CPU worker as pods, the images `make
images` built), and a chat completion answered through them with an API key.

podman (4.3, Debian 12) plays Deployment, ConfigMap and PersistentVolumeClaim.
What it does not carry, and how this test bridges it (docs/deployment.md,
"Kubernetes manifests on podman") — the manifests themselves are not changed:

- skipped kinds: Namespace, Service, NetworkPolicy, HorizontalPodAutoscaler,
  PodDisruptionBudget, ScaledObject (KEDA), ServiceMonitor and PrometheusRule
  (Prometheus Operator). Service names: a Deployment NAME runs as pod NAME-pod-0,
  which is a DNS name on a podman network with DNS; the test points the
  ConfigMap's GMAIVL_REDIS_URL at it.
- Secret: a secret volume without `optional` crashes podman 4.3 (nil pointer in
  VolumeFromSecret, containers/podman#16636, fixed in 4.4); the test plays each
  Secret as a ConfigMap with the same data and mounts it as one.
- a containerPort without hostPort is published on the same host port by podman
  4.3 (Kubernetes publishes nothing): the test gives each a free loopback port.
- `$(VAR)` in args is not expanded by podman 4.3; the test expands it from the
  container's ConfigMap and env, as the kubelet does.
- emptyDir: podman creates it root-owned 0755 (Kubernetes: world-writable), so
  a non-root pod cannot write it; the test makes each emptyDir a tmpfs
  (`medium: Memory`). The worker's cache is the demo-model volume the compose
  test trained (the demo is trained once per machine, not per test).
- the registry's redis:7.4-alpine is replaced by the Debian-built Redis image.
"""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest
import yaml
from openai import OpenAI

from service.processes import free_port
from service.security.keys import KeyFile
from tests.deploy import containers as c
from tests.deploy.assets import kustomize_build

pytestmark = pytest.mark.timeout(c.BUILD_TIMEOUT + c.DEMO_TIMEOUT + 900)

NETWORK = "gmai-vl-kube-test"
PLAYED = {"Deployment", "ConfigMap", "PersistentVolumeClaim"}
SKIPPED = {
    "Namespace", "Service", "NetworkPolicy", "HorizontalPodAutoscaler",
    "PodDisruptionBudget", "ScaledObject", "ServiceMonitor", "PrometheusRule",
}  # fmt: skip
VARIABLE = re.compile(r"\$\((\w+)\)")


def bridged(docs: list[dict], api_keys: str, demo_volume: str) -> list[dict]:
    """The overlay's output as podman 4.3 can play it (each change in the docstring)."""
    kinds = {d["kind"] for d in docs}
    assert kinds <= PLAYED | SKIPPED | {"Secret"}, kinds - PLAYED - SKIPPED
    config = {}
    played = []
    for doc in docs:
        doc = json.loads(json.dumps(doc))
        doc["metadata"].pop("namespace", None)
        if doc["kind"] == "Secret":
            data = dict(doc.get("stringData", {}))
            if doc["metadata"]["name"] == "gmai-vl-api-keys":
                data["api-keys.json"] = api_keys  # created out of band, as in production
            doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"],
                   "data": data}  # fmt: skip
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "gmai-vl-config":
            url = doc["data"]["GMAIVL_REDIS_URL"]
            doc["data"]["GMAIVL_REDIS_URL"] = url.replace(
                "//gmai-vl-redis:", "//gmai-vl-redis-pod-0:"
            )
            config = doc["data"]
        if doc["kind"] in PLAYED | {"ConfigMap"}:
            played.append(doc)
    for doc in played:
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                volume["configMap"] = {"name": volume.pop("secret")["secretName"]}
            elif "emptyDir" in volume:
                if name == "gmai-vl-worker" and volume["name"] == "cache":
                    del volume["emptyDir"]
                    volume["persistentVolumeClaim"] = {"claimName": demo_volume}
                else:
                    volume["emptyDir"] = {"medium": "Memory"}
        for container in pod["containers"]:
            for port in container.get("ports", []):
                port.update(hostIP="127.0.0.1", hostPort=free_port())
            if container["image"].startswith("redis:"):
                container["image"] = c.REDIS_DEBIAN
            env = dict(config) if container.get("envFrom") else {}
            env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
            container["args"] = [
                VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), arg)  # noqa: B023
                for arg in container.get("args", [])
            ]
    return played


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    c.require_podman()
    c.build_images()
    volume = c.ensure_demo_volume()
    keys = KeyFile()
    key = keys.create("radiology", name="kube-play-test")
    workdir = tmp_path_factory.mktemp("kube")
    keys.save(workdir / "keys.json")
    manifest = workdir / "dev.yaml"
    docs = bridged(kustomize_build("overlays/dev"), (workdir / "keys.json").read_text(), volume)
    manifest.write_text(yaml.safe_dump_all(docs))
    c.podman("kube", "down", str(manifest), check=False, timeout=300)
    if c.podman("network", "exists", NETWORK, check=False).returncode != 0:
        c.podman("network", "create", NETWORK)
    c.podman("kube", "play", "--network", NETWORK, str(manifest), timeout=600)
    try:
        gateway = pod_ip("gmai-vl-gateway-pod-0")
        url = f"http://{gateway}:8000"
        wait_ready(url)
        yield url, key, docs
    finally:
        c.podman("kube", "down", str(manifest), check=False, timeout=300)


def pod_ip(pod: str) -> str:
    infra = json.loads(c.podman("pod", "inspect", pod).stdout)["InfraContainerID"]
    networks = json.loads(c.podman("inspect", infra).stdout)[0]["NetworkSettings"]["Networks"]
    return networks[NETWORK]["IPAddress"]


def wait_ready(url: str, timeout: float = c.DEMO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = c.podman("logs", "--tail", "40", "gmai-vl-worker-pod-0-worker", check=False)
    raise AssertionError(f"kube-played gateway not ready:\n{logs.stdout}{logs.stderr}")


def test_the_dev_overlay_answers_a_request_on_podman(played):
    url, key, _ = played
    image = c.demo_volume_path() / c.HELD_OUT
    data = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    client = OpenAI(base_url=url + "/v1", api_key=key, timeout=300, max_retries=0)
    r = client.chat.completions.create(
        model="gmai-vl-demo", max_tokens=32, temperature=0,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data}},
            {"type": "text", "text": "Where is the lesion located?"},
        ]}],
    )  # fmt: skip
    assert "lower right" in r.choices[0].message.content


def test_the_key_from_the_secret_is_required(played):
    url, _, _ = played
    r = httpx.get(url + "/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"]


def test_pods_run_as_the_manifests_say(played):
    """runAsUser and readOnlyRootFilesystem reach the containers."""
    _, _, docs = played
    for name, uid in (
        ("gmai-vl-gateway-pod-0-gateway", 10001),
        ("gmai-vl-worker-pod-0-worker", 10001),
    ):
        config = json.loads(c.podman("inspect", name).stdout)[0]
        assert config["Config"]["User"].split(":")[0] == str(uid), name
        assert config["HostConfig"]["ReadonlyRootfs"] is True, name
    assert any(d["kind"] == "Deployment" for d in docs)


def test_the_bridge_leaves_the_manifests_alone():
    """What is played is derived from the overlay's output; k8s/ keeps Secrets,
    Services and `$(VAR)` args as Kubernetes needs them."""
    docs = kustomize_build("overlays/dev")
    assert {"Secret", "Service", "NetworkPolicy"} <= {d["kind"] for d in docs}
    worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gmai-vl-worker"
    )
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--redis-url=$(GMAIVL_REDIS_URL)" in args
