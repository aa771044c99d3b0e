"""Results as JSON, a Markdown table and a bar plot; two runs compared side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADLINE_KEYS = ("accuracy", "closed_accuracy", "open_exact_match", "open_token_recall")


def markdown_table(results: dict[str, Any]) -> str:
    overall = results["overall"]
    lines = [
        f"## {results['benchmark']} — {results['model']}",
        "",
        "| group | value | n | " + " | ".join(k for k in HEADLINE_KEYS if k in overall) + " |",
    ]
    keys = [k for k in HEADLINE_KEYS if k in overall]
    lines.append("| --- | --- | ---: | " + " | ".join("---:" for _ in keys) + " |")

    def row(group: str, value: str, figures: dict[str, Any]) -> str:
        cells = " | ".join(f"{figures[k]:.2f}" if k in figures else "" for k in keys)
        return f"| {group} | {value} | {figures['n']} | {cells} |"

    lines.append(row("overall", "", overall))
    for name, groups in results["breakdowns"].items():
        for value, figures in groups.items():
            lines.append(row(name, value, figures))
    if "unanswered" in overall:
        lines += [
            "",
            f"Unanswered (no option could be extracted, scored wrong): "
            f"{overall['unanswered']} of {overall['n']}.",
        ]
    if results.get("errors"):
        lines.append(f"Requests that failed (scored wrong): {results['errors']}.")
    return "\n".join(lines) + "\n"


def plot_breakdowns(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        (name, value, figures["accuracy"])
        for name, breakdown in results["breakdowns"].items()
        for value, figures in breakdown.items()
    ]
    labels = ["overall"] + [f"{name}: {value}" for name, value, _ in groups]
    values = [results["overall"]["accuracy"]] + [acc for _, _, acc in groups]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.2))
    bars = ax.barh(labels[::-1], values[::-1], color=["#1f77b4"] * len(groups) + ["#d62728"])
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"{results['benchmark']} — {results['model']} (n={results['overall']['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "results.md",
        "plot": out_dir / "results.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    plot_breakdowns(results, paths["plot"])
    return paths


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Markdown: accuracy of A and B per group, and B - A."""
    lines = [
        f"| group | value | A: {a['model']} | B: {b['model']} | Δ (B - A) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]

    def row(group: str, value: str, fa: dict[str, Any] | None, fb: dict[str, Any] | None) -> str:
        va = fa["accuracy"] if fa else None
        vb = fb["accuracy"] if fb else None
        delta = f"{vb - va:+.2f}" if va is not None and vb is not None else ""
        return f"| {group} | {value} | {_cell(va)} | {_cell(vb)} | {delta} |"

    lines.append(row("overall", "", a["overall"], b["overall"]))
    for name in sorted(set(a["breakdowns"]) | set(b["breakdowns"])):
        ga, gb = a["breakdowns"].get(name, {}), b["breakdowns"].get(name, {})
        for value in sorted(set(ga) | set(gb)):
            lines.append(row(name, value, ga.get(value), gb.get(value)))
    header = (
        f"{a['benchmark']} (A) vs {b['benchmark']} (B)"
        if a["benchmark"] != b["benchmark"]
        else a["benchmark"]
    )
    return f"## {header}\n\n" + "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
