"""k8s/components/dicom-node on the dev and prod overlays: it builds, validates against
the Kubernetes schemas, and is what docs/pacs.md promises: one replica with a
persistent spool, a Service on 11112, Redis reachable, its rules valid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.config import DicomNodeSettings
from service.dicom_node.rules import RuleSet
from tests.deploy.assets import K8S

VERSIONS = ("1.30.0", "1.37.0")


@pytest.fixture(scope="module", params=["overlays/dev", "overlays/prod"])
def built(request, tmp_path_factory) -> list[dict]:
    """The overlay with the component added, as an operator's kustomization would."""
    folder = tmp_path_factory.mktemp("kustomize")
    up = os.path.relpath(K8S, folder)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{up}/{request.param}]\ncomponents: [{up}/components/dicom-node]\n"
    )
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to build k8s/"
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", VERSIONS)
def test_the_node_validates(built, version):
    for kind in ("StatefulSet", "Service", "ConfigMap", "NetworkPolicy"):
        kubernetes_validate.validate(one(built, kind, "gmai-vl-dicom-node"
                                         if kind != "ConfigMap" else "gmai-vl-dicom-rules"),
                                     version, strict=True)  # fmt: skip


def test_one_replica_a_persistent_spool_and_port_11112(built):
    node = one(built, "StatefulSet", "gmai-vl-dicom-node")["spec"]
    assert node["replicas"] == 1
    [claim] = node["volumeClaimTemplates"]
    (container,) = node["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["GMAIVL_DICOM_SPOOL_DIR"]
    assert container["args"][0] == "dicom-node" and env["GMAIVL_DICOM_PORT"] == "11112"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    service = one(built, "Service", "gmai-vl-dicom-node")["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]}["dicom"] == 11112
    # settings names the service reads
    assert set(env) - {"GMAIVL_PORT"} <= {
        f"GMAIVL_DICOM_{name.upper()}" for name in DicomNodeSettings.model_fields
    }


def test_redis_lets_the_node_in(built):
    redis = one(built, "NetworkPolicy", "gmai-vl-redis")["spec"]["ingress"][0]["from"]
    names = [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in redis]
    assert "gmai-vl-dicom-node" in names


def test_the_example_rules_are_valid(built):
    rules = yaml.safe_load(one(built, "ConfigMap", "gmai-vl-dicom-rules")["data"]["rules.yaml"])
    RuleSet.model_validate(rules)


def test_the_compose_rules_and_orthanc_entry_match():
    """The compose stack's node reads Orthanc's CT studies and sends SRs back to it."""
    rules = RuleSet.model_validate(
        yaml.safe_load((K8S / "compose" / "dicom-rules.dev.yaml").read_text())
    )
    first = rules.rules[0]
    assert first.send_to is not None and first.send_to.model_dump()["host"] == "orthanc"
    entry = json.loads((K8S / "compose" / "orthanc-dicom-node.dev.json").read_text())
    assert entry["DicomModalities"]["gmaivl"]["Port"] == 11112
