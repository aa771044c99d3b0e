"""What the deployment files hold, read the way their tools read them: kustomize
builds, PromQL parsed into selectors (promql-parser), Grafana and rule files."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
MONITORING = K8S / "base" / "monitoring"
DASHBOARD = MONITORING / "gmai-vl-dashboard.json"
RULES = MONITORING / "gmai-vl.rules.yml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod")


def kustomize_build(path: str | Path) -> list[dict]:
    """`kubectl kustomize` (kustomize v5 built into kubectl), the resources it emits."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to build k8s/"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@dataclass(frozen=True)
class Query:
    where: str
    expr: str


def grafana_queries() -> list[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        Query(f"dashboard panel {panel['title']!r}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def rule_queries() -> list[Query]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [Query(f"alert {r['alert']}", r["expr"]) for g in groups for r in g["rules"]]


def keda_queries() -> list[Query]:
    docs = kustomize_build("base")
    return [
        Query(f"KEDA trigger {t['name']}", t["metadata"]["query"])
        for d in docs
        if d["kind"] == "ScaledObject"
        for t in d["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]


def all_queries() -> list[Query]:
    return grafana_queries() + rule_queries() + keda_queries()


def queried_names(prefix: str) -> set[str]:
    """Series names with this prefix that any dashboard, alert or KEDA query reads."""
    return {s.name for q in all_queries() for s in selectors(q.expr) if s.name.startswith(prefix)}


# Grafana's own variables are not PromQL; its documented stand-ins are ranges.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


@dataclass(frozen=True)
class Selector:
    name: str
    labels: frozenset[str]


def selectors(expr: str) -> list[Selector]:
    """Every series selector in a PromQL expression (raises ValueError if it does not parse)."""
    for variable, stand_in in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, stand_in)
    found: list[Selector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = frozenset(m.name for m in node.matchers.matchers if m.name != "__name__")
            found.append(Selector(node.name, labels))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in `by (...)` clauses."""
    for variable, stand_in in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, stand_in)
    labels: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return labels


def exported_series(families) -> dict[str, frozenset[str] | None]:
    """Series names a scrape exposes (counter `x` -> `x_total`, histogram -> `_bucket`...),
    each with the label names its samples carry, or None where it has no sample yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created", ""),
    }
    series: dict[str, frozenset[str] | None] = {}
    for family in families:
        for suffix in suffixes.get(family.type, ("",)):
            series.setdefault(family.name + suffix, None)
        for sample in family.samples:
            series[sample.name] = (series.get(sample.name) or frozenset()) | set(sample.labels)
    return series
