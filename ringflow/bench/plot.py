"""busbw against message size (log-x): ringflow's algorithms, the built-in, and the model."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

from .report import human, ratio_mode  # noqa: E402


def series(label: str) -> str:
    """The line a row belongs to: "auto:rhd" and "auto:ring" are both "auto" (one line, its
    points annotated with what auto ran)."""
    return label.split(":", 1)[0] if label.startswith("auto:") else label


def _busbw(r: dict) -> float:
    return r[ratio_mode(r)]["busbw"]


def _predicted(r: dict) -> float:
    return r["size"] / (r["pred_us"] * 1e-6) / 1e9 * _busbw(r) / r[ratio_mode(r)]["algbw"]


def plot(rows: list[dict], path: str, title: str, link_Bps: float | None = None) -> None:
    """Write a PNG: solid lines measured (median), dashed lines predicted by the model, dotted
    the link rate."""
    fig, ax = plt.subplots(figsize=(8, 5))
    measured = [r for r in rows if r.get(ratio_mode(r))]
    for name in dict.fromkeys(series(r["label"]) for r in measured):
        mine = [r for r in measured if series(r["label"]) == name]
        line, = ax.plot([r["size"] for r in mine], [_busbw(r) for r in mine], marker="o",
                        label=name)
        if name == "auto":                      # what auto picked, at each size
            for r in mine:
                ax.annotate(r["label"].split(":", 1)[1], (r["size"], _busbw(r)), fontsize=7,
                            textcoords="offset points", xytext=(0, 6), ha="center")
        pred = [(r["size"], _predicted(r)) for r in mine if r.get("pred_us")]
        if pred:
            ax.plot(*zip(*pred), linestyle="--", linewidth=1.5, color=line.get_color(),
                    label=f"{name} (model)")
    top = max((_busbw(r) for r in measured), default=1.0)
    if link_Bps:
        ax.axhline(link_Bps / 1e9, linestyle=":", color="gray", label="link rate")
        top = max(top, link_Bps / 1e9)
    ax.set_ylim(0, top * 1.3)                   # a model far off (untuned) must not flatten the data
    sizes = sorted({r["size"] for r in measured})
    ax.set_xscale("log", base=2)
    if sizes:
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human(int(x))))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_xlabel("message size")
    ax.set_ylabel("bus bandwidth (GB/s), median")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
