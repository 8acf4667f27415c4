"""Embeddings shared by the networks: timestep, class label (with a null label for
classifier-free guidance) and fixed 2D sin-cos positions.

Time convention, for every network in ``ringflow.models``: ``t`` is a float tensor (B,) in
[0, 1], 0 = data and 1 = pure noise. Rectified flow passes its t directly; DDPM passes
(i + 1) / T for step i (see ``ddpm.py``). ``TimestepEmbedder`` multiplies by 1000 before the
sinusoids so the frequencies match the usual integer-step convention (Ho et al. 2020).

Label convention: ``y`` is a LongTensor (B,) of class ids; the value ``NULL_LABEL`` (-1)
means "no label" and selects a learned null embedding, as does ``y=None``. Objectives drop
labels to ``NULL_LABEL`` during training (``drop_labels``) and use it for the unconditional
half of classifier-free guidance (Ho & Salimans 2022).

    emb = TimestepEmbedder(256); c = emb(torch.rand(8))          # (8, 256)
    lab = LabelEmbedder(10, 256); c = c + lab(y)                  # y: (8,) with -1 = null

``Conditioning`` is the two together with the input's shape check, as DiT, MMDiT and UNet use it.
"""
import math

import torch
from torch import nn

NULL_LABEL = -1
TIME_SCALE = 1000.0


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding (Vaswani et al. 2017, as in DDPM/DiT) of t (B,) -> (B, dim).

    Frequencies run geometrically from 1 to 1/max_period; the first half of the output
    holds cosines, the second sines (odd ``dim`` gets one zero column).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]                       # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)   # (B, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t (B,) in [0, 1] -> (B, dim): sinusoids of 1000*t followed by a 2-layer SiLU MLP."""

    def __init__(self, dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        emb = timestep_embedding(t * TIME_SCALE, self.freq_dim)   # fp32 whatever t's dtype
        return self.mlp(emb.to(self.mlp[0].weight.dtype))          # bf16 weights: bf16 input


class LabelEmbedder(nn.Module):
    """y (B,) LongTensor or None -> (B, dim); row ``num_classes`` is the null label.

    ``y == NULL_LABEL`` (or ``y=None``, then ``batch`` is required) selects the null row.
    """

    def __init__(self, num_classes, dim):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y, batch=None, device=None):
        if y is None:
            y = torch.full((batch,), NULL_LABEL, dtype=torch.long, device=device)
        if y.dtype != torch.long or y.dim() != 1:
            raise ValueError(f"labels must be a LongTensor (B,), got {y.dtype} {tuple(y.shape)}")
        if (y >= self.num_classes).any() or (y < NULL_LABEL).any():
            raise ValueError(f"labels must be in [0, {self.num_classes}) or {NULL_LABEL} (null); "
                             f"got range [{int(y.min())}, {int(y.max())}]")
        return self.table(torch.where(y == NULL_LABEL, self.num_classes, y))


class Conditioning(nn.Module):
    """The prologue of the image networks: check x's shape, then c = time(t) + label(y).

    x (B, C, S, S), t (B,) in [0, 1], y (B,) | None -> c (B, dim); ``name`` words the errors.
    num_classes=0 makes it unconditional (y must then be None). ``check_height=False`` checks
    only C and W: UNet has always accepted any height, and moving its check must not refuse
    an input it ran.

        cond = Conditioning("DiT", in_channels=1, image_size=8, dim=128, num_classes=10)
        c = cond(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, -1]))
    """

    def __init__(self, name, in_channels, image_size, dim, num_classes, check_height=True):
        super().__init__()
        self.name, self.in_channels, self.image_size = name, in_channels, image_size
        self.check_height = check_height
        self.time = TimestepEmbedder(dim)
        self.label = LabelEmbedder(num_classes, dim) if num_classes else None

    def forward(self, x, t, y=None):
        return self.embed(x, t, y)[0]

    def embed(self, x, t, y=None):
        """-> c (B, dim) and the label embedding (B, dim) | None (MMDiT makes tokens of it)."""
        self.check(x)
        c = self.time(t)                                           # (B, dim)
        if self.label is None:
            if y is not None:
                raise ValueError(f"this {self.name} was built with num_classes=0; pass y=None")
            return c, None
        label = self.label(y, batch=x.shape[0], device=x.device)
        return c + label, label

    def check(self, x):
        c, s = self.in_channels, self.image_size
        if (x.dim() != 4 or x.shape[1] != c or x.shape[-1] != s
                or (self.check_height and x.shape[2] != s)):
            raise ValueError(f"{self.name} expects (B, {c}, {s}, {s}), got {tuple(x.shape)}")


def drop_labels(y, prob, generator=None):
    """Replace each label by ``NULL_LABEL`` with probability ``prob`` (CFG training).

    y: LongTensor (B,) or None -> same shape (None stays None).
    """
    if y is None or prob <= 0:
        return y
    u = torch.rand(y.shape, generator=generator, device=y.device)
    return torch.where(u < prob, torch.full_like(y, NULL_LABEL), y)


def sincos_pos_embed_2d(dim, height, width):
    """Fixed 2D sin-cos position embedding (MAE/DiT) -> (height*width, dim), row-major.

    Half the channels encode the row index and half the column index, each with
    1D sinusoids; ``dim`` must be divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos position embedding needs dim % 4 == 0, got dim={dim}")
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    emb_r = timestep_embedding(rows.flatten().float(), dim // 2)   # (H*W, dim/2)
    emb_c = timestep_embedding(cols.flatten().float(), dim // 2)
    return torch.cat([emb_r, emb_c], dim=-1)


def guided(net, x, t, y=None, cfg_scale=1.0):
    """Network output with classifier-free guidance (Ho & Salimans 2022, eq. 6).

    out = uncond + cfg_scale * (cond - uncond), one batched call on [x; x] with labels
    [y; NULL_LABEL]. cfg_scale == 1 or y is None is a single plain call net(x, t, y).
    x (B, ...), t (B,), y (B,) | None -> (B, ...).
    """
    if y is None or cfg_scale == 1.0:
        return net(x, t, y)
    null = torch.full_like(y, NULL_LABEL)
    out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = out.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


def net_device(net, device=None):
    """``device`` if given, else the device of the network's first parameter, else CPU."""
    if device is not None:
        return torch.device(device)
    param = next(iter(net.parameters()), None) if hasattr(net, "parameters") else None
    return param.device if param is not None else torch.device("cpu")
