"""busbw against message size (log-x): ringflow's algorithms, the built-in, and the model."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import ratio_mode  # noqa: E402


def plot(rows: list[dict], path: str, title: str, link_Bps: float | None = None) -> None:
    """Write a PNG: solid lines measured (median), dashed lines predicted, dotted the link rate."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label and r.get(ratio_mode(r))]
        sizes = [r["size"] for r in mine]
        line, = ax.plot(sizes, [r[ratio_mode(r)]["busbw"] for r in mine], marker="o", label=label)
        pred = [(r["size"], r["size"] / (r["pred_us"] * 1e-6) / 1e9 * r[ratio_mode(r)]["busbw"]
                 / r[ratio_mode(r)]["algbw"]) for r in mine if r.get("pred_us")]
        if pred:
            ax.plot(*zip(*pred), linestyle="--", color=line.get_color(), alpha=0.6,
                    label=f"{label} (model)")
    if link_Bps:
        ax.axhline(link_Bps / 1e9, linestyle=":", color="gray", label="link rate")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s), median")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
