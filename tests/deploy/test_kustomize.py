"""k8s/: every kustomization builds (`kubectl kustomize`, kustomize v5), every
built-in resource validates against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields fail), and the custom resources (KEDA, Prometheus
Operator), which have no schema there, are checked against what they point at."""

from __future__ import annotations

import json
import os

import kubernetes_validate
import promql_parser
import pytest

from service.config import Settings
from service.security.keys import KeyFile
from tests.deploy.assets import K8S, KUSTOMIZATIONS, kustomize_build

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # oldest we document, newest the validator knows
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
# The demo model trained in the worker-cpu container on this project's 2-core
# machine (docs/deployment.md, "Measured"): what the dev startup probe must cover.
DEMO_TRAINING_SECONDS = 564


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def built(request) -> tuple[str, list[dict]]:
    return request.param, kustomize_build(request.param)


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_resources_validate_against_kubernetes_schemas(built, version):
    _, docs = built
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misplaced_field(built):
    _, docs = built
    deployment = find(docs, "Deployment", "gmai-vl-gateway")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes_use_named_ports_the_containers_open(built):
    _, docs = built
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = container.get(probe, {})
                for action in ("httpGet", "tcpSocket"):
                    if action in spec:
                        assert spec[action]["port"] in ports, (doc["metadata"]["name"], probe)


def test_worker_probes_reflect_real_readiness(built):
    _, docs = built
    (worker,) = find(docs, "Deployment", "gmai-vl-worker")["spec"]["template"]["spec"]["containers"]
    assert worker["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/health/live"
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["GMAIVL_METRICS_PORT"] == str(worker["ports"][0]["containerPort"])


def test_gpu_only_in_the_gpu_builds(built):
    path, docs = built
    worker = find(docs, "Deployment", "gmai-vl-worker")["spec"]["template"]["spec"]
    limits = worker["containers"][0]["resources"]["limits"]
    if path == "overlays/dev":
        assert "nvidia.com/gpu" not in limits
        assert not any(d["kind"] == "PersistentVolumeClaim" for d in docs)
        assert find(docs, "ConfigMap", "gmai-vl-config")["data"]["GMAIVL_ENGINE"] == "transformers"
    else:
        assert limits["nvidia.com/gpu"] == 1
        volumes = {v["name"]: v for v in worker["volumes"]}
        claim = volumes["model"]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        find(docs, "PersistentVolumeClaim", claim["claimName"])
    if path == "overlays/prod":
        assert find(docs, "ConfigMap", "gmai-vl-config")["data"]["GMAIVL_ENGINE"] == "vllm"


def test_api_key_secret_is_mounted_where_the_config_says(built):
    """The key file path the authentication layer reads (GMAIVL_API_KEYS_FILE) is the
    Secret's mount. prod ships no Secret objects: applying it must not overwrite the
    real ones, which are created out of band."""
    path, docs = built
    config = find(docs, "ConfigMap", "gmai-vl-config")["data"]
    gateway = find(docs, "Deployment", "gmai-vl-gateway")["spec"]["template"]["spec"]
    secret_volumes = {
        v["name"]: v["secret"]["secretName"] for v in gateway["volumes"] if "secret" in v
    }
    mounts = {m["mountPath"]: m["name"] for m in gateway["containers"][0]["volumeMounts"]}
    for setting, key in (
        ("GMAIVL_API_KEYS_FILE", "api-keys.json"),
        ("GMAIVL_PACS_FILE", "pacs.json"),
    ):
        directory, filename = config[setting].rsplit("/", 1)
        assert filename == key
        name = secret_volumes[mounts[directory]]
        if path == "overlays/prod":
            assert not [d for d in docs if d["kind"] == "Secret"]
        else:
            assert key in find(docs, "Secret", name)["stringData"]


def test_keda_scales_the_worker_on_queue_metrics(built):
    _, docs = built
    scaled = find(docs, "ScaledObject", "gmai-vl-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    find(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert scaled["spec"]["minReplicaCount"] >= 1
    queries = {t["name"]: t["metadata"]["query"] for t in scaled["spec"]["triggers"]}
    assert "gmaivl_queue_depth" in queries["queue-depth"]
    assert "gmaivl_queue_oldest_age_seconds" in queries["urgent-queue-age"]
    assert "gmaivl_in_flight_requests" in queries["in-flight"]  # still preprocessing
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        assert float(trigger["metadata"]["threshold"]) > 0
        namespace = scaled["metadata"].get("namespace")
        if namespace:  # overlays: the queries select the namespace the stack runs in
            assert f'namespace="{namespace}"' in trigger["metadata"]["query"]


def test_service_monitor_finds_gateway_and_worker_ports(built):
    _, docs = built
    monitor = find(docs, "ServiceMonitor", "gmai-vl")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
    ]
    assert {s["metadata"]["name"] for s in services} == {"gmai-vl-gateway", "gmai-vl-worker"}
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == ports


def test_disruption_budgets_and_drain_time(built):
    _, docs = built
    for name in ("gmai-vl-gateway", "gmai-vl-worker"):
        budget = find(docs, "PodDisruptionBudget", name)
        deployment = find(docs, "Deployment", name)
        assert budget["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    config = find(docs, "ConfigMap", "gmai-vl-config")["data"]
    worker = find(docs, "Deployment", "gmai-vl-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > float(config["GMAIVL_DRAIN_GRACE"])
    gateway = find(docs, "Deployment", "gmai-vl-gateway")["spec"]["template"]["spec"]
    # The longest request a client may ask for (X-Request-Timeout), not the default one,
    # plus the preStop pause, fits in the grace.
    longest = float(config.get("GMAIVL_MAX_REQUEST_TIMEOUT", Settings().max_request_timeout))
    assert longest >= float(config["GMAIVL_REQUEST_TIMEOUT"])
    pre_stop = gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert gateway["terminationGracePeriodSeconds"] >= longest + float(pre_stop[1])


def test_keda_queries_select_the_model_the_overlay_serves(built):
    """The queue series are labelled with the served model id; a trigger selecting
    another model never fires."""
    _, docs = built
    served = find(docs, "ConfigMap", "gmai-vl-config")["data"]["GMAIVL_SERVED_MODEL_NAME"]
    scaled = find(docs, "ScaledObject", "gmai-vl-worker")
    checked = 0
    for trigger in scaled["spec"]["triggers"]:
        for matcher in label_matchers(trigger["metadata"]["query"]):
            if matcher[0] == "model":
                assert matcher[1] == served, trigger["name"]
                checked += 1
    assert checked >= 3


def label_matchers(expr: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.extend((m.name, m.value) for m in node.matchers.matchers)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_placeholder_secrets_are_valid_files(built):
    """The shipped placeholders start a gateway: an empty key file, an empty PACS list."""
    path, docs = built
    if path == "overlays/prod":
        return  # no Secret objects there
    keys = KeyFile.parse(find(docs, "Secret", "gmai-vl-api-keys")["stringData"]["api-keys.json"])
    assert keys.keys == []
    assert json.loads(find(docs, "Secret", "gmai-vl-pacs")["stringData"]["pacs.json"]) == []


def test_the_dev_worker_startup_probe_covers_training_the_demo(built):
    """The dev worker trains the demo model at first start (measured in the worker-cpu
    container: DEMO_TRAINING_SECONDS on 2 cores); its startup probe allows that on
    the CPU it requests, twice over."""
    path, docs = built
    if path != "overlays/dev":
        return
    worker = find(docs, "Deployment", "gmai-vl-worker")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    probe = container["startupProbe"]
    allowed = probe["periodSeconds"] * probe["failureThreshold"]
    cpus = float(container["resources"]["requests"]["cpu"])
    assert allowed >= 2 * DEMO_TRAINING_SECONDS * (2 / min(cpus, 2))


def test_pods_run_unprivileged(built):
    _, docs = built
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_external_redis_component_replaces_the_in_cluster_redis(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(K8S / 'overlays' / 'prod', overlay)}]\n"
        f"components: [{os.path.relpath(K8S / 'components' / 'external-redis', overlay)}]\n"
    )
    docs = kustomize_build(overlay)
    assert not [d for d in docs if d["metadata"]["name"] == "gmai-vl-redis"]
    for name in ("gmai-vl-gateway", "gmai-vl-worker"):
        (container,) = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        (url,) = [e for e in container["env"] if e["name"] == "GMAIVL_REDIS_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "gmai-vl-redis", "key": "url"}
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
