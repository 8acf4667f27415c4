"""PNG pictures of a run: sample grids (or 2D scatter plots) and the loss curve.

    save_samples(x, "runs/a/samples/step-0500.png", labels=y)   # x (N, C, H, W) in [-1, 1]
    save_samples(pts, "runs/a/samples/final.png", reference=data)   # (N, 2) beside the data
    save_loss_curve("runs/a/metrics.jsonl", "runs/a/loss.png", title="dit + rectified_flow",
                    resumed_at=[300])
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                       # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .generate import grid_columns  # noqa: E402


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1,
               scale: int = 4) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows, cols, 3) with ``pad`` pixel gutters, upscaled;
    ``nrow`` images a row (default ``grid_columns(N)``: 8 images -> 2 rows of 4)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or grid_columns(n)
    ncol = math.ceil(n / nrow)
    grid = torch.full((3, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i].expand(3, h, w)
    # nearest-neighbour upscaling keeps 8x8 digits crisp instead of blurred
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid.permute(1, 2, 0).numpy()


def save_samples(x: torch.Tensor, path, nrow: int | None = None,
                 labels: torch.Tensor | None = None,
                 reference: torch.Tensor | None = None) -> Path:
    """Images as a grid PNG (``labels`` (N,): each row, or image, named by its class), 2D points
    as a scatter PNG (``reference`` (M, 2): the data, drawn beside them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4 and labels is None:
        nrow = nrow or grid_columns(len(x))
        plt.imsave(path, image_grid(x, nrow, scale=max(2, 512 // (x.shape[-1] * nrow))))
        return path
    if x.dim() == 4:
        fig = labelled_grid_figure(x, labels, nrow)
    elif x.dim() == 2 and x.shape[1] == 2:
        fig = scatter_figure(x, reference)
    else:
        raise ValueError(f"samples must be images (N, C, H, W) or 2D points (N, 2), "
                         f"got {tuple(x.shape)}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def labelled_grid_figure(x: torch.Tensor, labels: torch.Tensor, nrow: int | None = None):
    """The image grid with its class labels: one per row when the row holds one class (the
    layout ``generate.grid_labels`` makes), else one in each image's corner."""
    nrow = nrow or grid_columns(len(x))
    scale = max(2, 512 // (x.shape[-1] * nrow))
    grid, cell = image_grid(x, nrow, scale=scale), (x.shape[-1] + 1) * scale   # 1-pixel gutters
    margin = 48                                              # pixels left of the grid for labels
    fig = plt.figure(figsize=((grid.shape[1] + margin) / 100, grid.shape[0] / 100), dpi=100)
    ax = fig.add_axes((margin / (grid.shape[1] + margin), 0, 1 - margin / (grid.shape[1] + margin),
                       1))
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    labels = [int(v) for v in labels]
    rows = [labels[i:i + nrow] for i in range(0, len(labels), nrow)]
    for r, row in enumerate(rows):
        if len(set(row)) == 1:
            ax.text(-6, (r + 0.5) * cell, f"class {row[0]}", ha="right", va="center",
                    fontsize=8, clip_on=False)
            continue
        for k, label in enumerate(row):
            ax.text(k * cell + 2 * scale, r * cell + 2 * scale, str(label), ha="left", va="top",
                    fontsize=7, color="yellow")
    return fig


def scatter_figure(x: torch.Tensor, reference: torch.Tensor | None = None):
    """Samples (blue), and beside them, on the same axes limits, the data (orange)."""
    pts = x.detach().float().cpu().numpy()
    panels = [("samples", pts, "tab:blue")]
    if reference is not None:
        ref = reference.detach().float().cpu()
        ref = ref[::max(1, len(ref) // 2000)].numpy()       # enough points to see the shape
        panels.insert(0, ("data", ref, "tab:orange"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (name, p, colour) in zip(axes[0], panels):
        ax.scatter(p[:, 0], p[:, 1], s=2, color=colour)
        ax.set_title(f"{name} ({len(p)} points)")
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def read_metrics(path) -> list[dict]:
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values between lo > 0 and hi for a log axis: 1-2-5 per decade, or 1..9 per decade,
    whichever first gives three; for a narrower range, evenly spaced round numbers."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0 ** e for e in decades for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3:
            return ticks
    values = ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [float(v) for v in values if lo <= v <= hi] or [lo, hi]


def loss_figure(rows: list[dict], title: str = "", resumed_at=()):
    """Loss against step (and a moving average), log-y with plain-number labels; a dashed line
    at each step where the run resumed from a checkpoint."""
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    k = max(1, len(loss) // 20)
    ax.plot(steps, loss, alpha=0.35 if k > 1 else 1.0, label="loss (mean over ranks)")
    if k > 1:
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=f"moving average of {k}")
    for i, step in enumerate(resumed_at):
        ax.axvline(step, color="grey", linestyle="--", linewidth=1,
                   label="resumed from a checkpoint" if i == 0 else None)
    if loss.min() > 0:                    # a flow's NLL can be negative: then a linear axis
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.FixedLocator(log_ticks(loss.min(), loss.max())))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())   # not "1.665x10^0"
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_loss_curve(metrics_path, path, title: str = "", resumed_at=()) -> Path | None:
    """``loss_figure`` of metrics.jsonl as a PNG; None when no row has a loss."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not rows:
        return None
    fig = loss_figure(rows, title, resumed_at)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
