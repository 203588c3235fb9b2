"""The ingest benchmark's PNG: requests/s and ack p99 per target (medians, min-max whiskers)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def render(results: dict[str, Any], path: Path) -> None:
    """Two bar charts side by side, titled with the date and the machine."""
    rows = results["flat_out"]
    keys = list(rows)
    # wrapped: five labels of up to 40 characters side by side would overlap
    labels = [textwrap.fill(f"({k}) {rows[k]['label']}", 18) for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, field, unit in ((left, "rps", "requests/s"), (right, "p99_ms", "ack p99 (ms)")):
        med = [rows[k]["median"][field] for k in keys]
        lo = [med[i] - min(r[field] for r in rows[k]["rounds"]) for i, k in enumerate(keys)]
        hi = [max(r[field] for r in rows[k]["rounds"]) - med[i] for i, k in enumerate(keys)]
        colors = ["#1f77b4" if k.startswith(("a", "b")) else "#999999" for k in keys]
        bars = ax.bar(range(len(keys)), med, yerr=[lo, hi], capsize=4, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in med],
                     padding=3, fontsize=8)
        ax.set_xticks(range(len(keys)), labels, fontsize=7)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    log = "d" in rows
    if log:
        right.set_yscale("log")
    left.set_title(f"flat out, wrk -c{results['config']['connections']}, "
                   f"median of {results['config']['rounds']} rounds")
    right.set_title("ack p99" + (" (log scale)" if log else ""))
    fig.suptitle(f"carehook ingest benchmark, {results['date']}, {results['machine']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
