"""PNG pictures of a run: sample grids (or 2D scatter plots) and the loss curve.

    save_samples(x, "runs/a/samples/step-0500.png")     # x (N, C, H, W) in [-1, 1] or (N, 2)
    save_loss_curve("runs/a/metrics.jsonl", "runs/a/loss.png")
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


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1,
               scale: int = 4) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows, cols, 3) with ``pad`` pixel gutters, upscaled."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((3, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i].expand(3, h, w)
    # nearest-neighbour upscaling keeps 8x8 digits crisp instead of blurred
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid.permute(1, 2, 0).numpy()


def save_samples(x: torch.Tensor, path, nrow: int | None = None) -> Path:
    """Images as a grid PNG, 2D points as a scatter PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        width = x.shape[-1] * (nrow or math.ceil(math.sqrt(len(x))))
        plt.imsave(path, image_grid(x, nrow, scale=max(2, 512 // width)))   # about 512 px wide
    elif x.dim() == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        pts = x.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100)
        plt.close(fig)
    else:
        raise ValueError(f"samples must be images (N, C, H, W) or 2D points (N, 2), "
                         f"got {tuple(x.shape)}")
    return path


def read_metrics(path) -> list[dict]:
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def save_loss_curve(metrics_path, path) -> Path | None:
    """Loss against step from metrics.jsonl, with a smoothed line; None when there is no loss."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    k = max(1, len(loss) // 20)
    ax.plot(steps, loss, alpha=0.35 if k > 1 else 1.0, label="loss (mean over ranks)")
    if k > 1:
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=f"moving average of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
