"""Offline sample-quality metrics; no download, no pretrained network.

- 2D sets: ``sliced_wasserstein`` (SW2 after z-scoring with the reference's statistics, fixed
  random directions from ``seed``; Bonneel et al. 2015) and ``mode_coverage`` for mixtures.
- Images: ``train_classifier`` fits a small CNN on the dataset itself (cached on disk by a hash
  of the data); its penultimate features give ``frechet_distance`` (FID's formula, Heusel et
  al. 2017) and ``kernel_distance`` (KID, Binkowski et al. 2018), and its predictions give the
  accuracy of class-conditional samples (``image_metrics`` bundles the three).
- Bits/dim of flows and ODE models: ``ringflow.models.likelihood.bits_per_dim``.

    sw = sliced_wasserstein(samples, data)                    # float
    clf = train_classifier(x, y)                              # cached SmallClassifier
    m = image_metrics(clf, samples, x, sample_labels=y_s)     # {"fd", "kid", "accuracy"}
"""
import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ringflow import settings


def sliced_wasserstein(samples, reference, *, num_projections=512, seed=0):
    """SW2 between point sets (N, D) and (M, D) -> float.

    Both are z-scored with the reference's per-coordinate mean and std; each 1D W2 compares
    quantiles at min(N, M) evenly spaced levels; SW2 = sqrt(mean over directions of W2^2).
    """
    ref = reference.double()
    mean, std = ref.mean(0), ref.std(0)
    a, b = (samples.double() - mean) / std, (ref - mean) / std
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], num_projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    n = min(len(a), len(b))
    qa, qb = _quantiles(a.cpu() @ dirs, n), _quantiles(b.cpu() @ dirs, n)   # (n, P) each
    return (qa - qb).pow(2).mean().sqrt().item()


def _quantiles(proj, n):
    """Column quantiles of proj (N, P) at levels (k + 0.5) / n -> (n, P), linear interpolation
    between order statistics (sorted values sit at levels (i + 0.5) / N)."""
    ordered = torch.from_numpy(np.sort(proj.numpy(), axis=0))      # ~10x torch.sort on CPU
    if len(proj) == n:
        return ordered
    pos = ((torch.arange(n, dtype=proj.dtype) + 0.5) / n * len(proj) - 0.5).clamp(0, len(proj) - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=len(proj) - 1)
    frac = (pos - lo)[:, None]
    return ordered[lo] * (1 - frac) + ordered[hi] * frac


def mode_coverage(samples, centres, radius):
    """Share of samples per mode (nearest centre) and share within ``radius`` of any centre.

    samples (N, D), centres (K, D) -> {"fractions": (K,) tensor summing to 1, "in_radius": float}.
    """
    dist = torch.cdist(samples.double(), centres.double())        # (N, K)
    nearest = dist.argmin(1)
    fractions = torch.bincount(nearest, minlength=len(centres)).double() / len(samples)
    in_radius = (dist.min(1).values <= radius).double().mean().item()
    return {"fractions": fractions, "in_radius": in_radius}


class SmallClassifier(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); ``features`` gives the penultimate (B, 128)."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128), nn.GELU())
        self.head = nn.Linear(128, num_classes)
        self.register_buffer("val_accuracy", torch.tensor(float("nan")))

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def _cache_path(x, y, epochs, seed, cache_dir):
    digest = hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()
                          + f"{epochs},{seed},v1".encode()).hexdigest()[:16]
    root = cache_dir or settings.cache_dir()
    return os.path.join(root, f"classifier-{digest}.pt")


def train_classifier(x, y, *, epochs=30, seed=0, cache_dir=None, noise_aug=0.1):
    """Fit (or load from cache) a SmallClassifier on images x (N, C, H, W) in [-1, 1], y (N,).

    90% train / 10% held out (accuracy stored in ``val_accuracy``); Gaussian noise of std
    ``noise_aug`` on inputs keeps slightly-off samples classifiable. Returns it in eval mode.
    Cache: ``cache_dir``, else $RINGFLOW_CACHE, else ~/.cache/ringflow.
    """
    x, y = x.detach().cpu().float(), y.detach().cpu().long()
    model = SmallClassifier(x.shape[1], int(y.max()) + 1)
    path = _cache_path(x, y, epochs, seed, cache_dir)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    cut = int(0.9 * len(x))
    train, held = order[:cut], order[cut:]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in train[torch.randperm(cut, generator=g)].split(128):
            xb = x[idx] + noise_aug * torch.randn(x[idx].shape, generator=g)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        model.val_accuracy.fill_((model(x[held]).argmax(1) == y[held]).float().mean())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(model.state_dict(), path + ".tmp")
    os.replace(path + ".tmp", path)                                # atomic: no half-written cache
    return model


@torch.no_grad()
def classifier_features(classifier, x, batch=512):
    """Penultimate features (N, F) float64 of images x (N, C, H, W), on the classifier's device."""
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(b.to(device)).double().cpu() for b in x.split(batch)])


def frechet_distance(f1, f2):
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) for features (N, F), (M, F)."""
    mu1, mu2 = f1.double().mean(0), f2.double().mean(0)
    s1, s2 = torch.cov(f1.double().T), torch.cov(f2.double().T)
    vals, vecs = torch.linalg.eigh(s1)
    root1 = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross).item()


def kernel_distance(f1, f2, *, subsets=10, subset_size=500, seed=0):
    """KID: unbiased MMD^2 with kernel (a.b / F + 1)^3, averaged over random subsets -> float."""
    g = torch.Generator().manual_seed(seed)
    m = min(subset_size, len(f1), len(f2))
    total = 0.0
    for _ in range(subsets):
        a = f1[torch.randperm(len(f1), generator=g)[:m]].double()
        b = f2[torch.randperm(len(f2), generator=g)[:m]].double()
        kaa, kbb, kab = ((p @ q.T / a.shape[1] + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
        off = 1 - torch.eye(m, dtype=torch.float64)
        total += ((kaa * off).sum() + (kbb * off).sum()) / (m * (m - 1)) - 2 * kab.mean()
    return float(total / subsets)


@torch.no_grad()
def image_metrics(classifier, samples, reference, sample_labels=None):
    """{"fd", "kid", "accuracy"} of samples (N, C, H, W) against reference images (M, C, H, W).

    accuracy: share of samples the classifier labels as ``sample_labels`` (None: omitted).
    """
    fs, fr = classifier_features(classifier, samples), classifier_features(classifier, reference)
    out = {"fd": frechet_distance(fs, fr), "kid": kernel_distance(fs, fr)}
    if sample_labels is not None:
        device = next(classifier.parameters()).device
        pred = torch.cat([classifier(b.to(device)).argmax(1).cpu() for b in samples.split(512)])
        out["accuracy"] = (pred == sample_labels.cpu()).float().mean().item()
    return out
