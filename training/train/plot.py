"""Loss curves as a PNG (matplotlib, Agg backend): one line per phase, steps end to end."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen


def plot_losses(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """Phases are drawn one after another on a shared step axis."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for name, points in curves.items():
        if not points:
            continue
        steps = [offset + s for s, _ in points]
        ax.plot(steps, [loss for _, loss in points], label=name, linewidth=1.2)
        ax.axvline(offset, color="grey", linewidth=0.5, linestyle=":")
        offset = steps[-1]
    ax.set_xlabel("optimizer step (phases end to end)")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
