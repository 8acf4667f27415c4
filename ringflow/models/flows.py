"""Normalizing flows: NICE (Dinh et al. 2014, arXiv:1410.8516) and RealNVP (Dinh et al. 2016,
arXiv:1605.08803), on flattened inputs.

A flow is a bijection f: x -> z with a standard-normal prior on z, so
log p(x) = log N(f(x); 0, I) + log|det df/dx|  (NICE eq. 1).

- NICE: additive couplings y_b = x_b + m(x_a) (log-det exactly 0, eq. 6) on alternating halves
  of the dimensions, then a diagonal scaling layer z = exp(s) * h (log-det sum(s), sec. 3.3).
- RealNVP: affine couplings y_b = x_b * exp(s(x_a)) + t(x_a) (eq. 7) with alternating binary
  masks; s is bounded by tanh times a learned scale for stability.

Shapes: ``forward(x) -> (z, logdet)`` with x (B, *event_shape), z (B, D), logdet (B,);
``inverse(z) -> x`` (B, *event_shape); ``log_prob(x) -> (B,)`` nats; ``nll(x) -> scalar`` mean
nats; ``sample(n, generator=None) -> (n, *event_shape)`` by inverting prior draws. Flows are
unconditional: the constructors accept ``num_classes`` only so every network builds alike.

    flow = RealNVP(in_channels=2, hidden=128, num_layers=8)
    loss = flow.nll(x)                 # x (B, 2)
    x_new = flow.sample(1000)          # (1000, 2)
"""
import math

import torch
from torch import nn

from ringflow.models.mlp import mlp


def alternating_mask(event_shape, parity):
    """Bool (D,): True on the half that conditions the coupling; layers alternate ``parity``.

    Vectors split odd/even coordinates; images (C, H, W) use RealNVP's checkerboard (sec. 3.4).
    """
    idx = torch.meshgrid(*[torch.arange(n) for n in event_shape], indexing="ij")
    spatial = idx[-2:] if len(event_shape) == 3 else idx
    return ((sum(spatial) % 2) == parity).flatten()


class AdditiveCoupling(nn.Module):
    """NICE coupling: x_b <- x_b + m(x_a); log-det 0."""

    def __init__(self, dim, mask, hidden, depth):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.m = mlp(dim, dim, hidden, depth, zero_last=True)

    def forward(self, x):                                          # (B, D) -> (B, D), (B,)
        shift = self.m(x * self.mask) * (1 - self.mask)
        return x + shift, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)

    def inverse(self, y):
        return y - self.m(y * self.mask) * (1 - self.mask)


class AffineCoupling(nn.Module):
    """RealNVP coupling: x_b <- x_b * exp(s(x_a)) + t(x_a); log-det sum of s over b."""

    def __init__(self, dim, mask, hidden, depth):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = mlp(dim, 2 * dim, hidden, depth, zero_last=True)
        self.scale = nn.Parameter(torch.ones(dim))

    def _st(self, x_a):
        s, t = self.net(x_a).chunk(2, dim=-1)
        free = 1 - self.mask
        return torch.tanh(s) * self.scale * free, t * free        # zero on the conditioning half

    def forward(self, x):
        s, t = self._st(x * self.mask)
        return x * torch.exp(s) + t, s.sum(-1)

    def inverse(self, y):
        s, t = self._st(y * self.mask)
        return (y - t) * torch.exp(-s)


class Flow(nn.Module):
    """A stack of couplings (+ optional diagonal scaling) with a standard-normal prior."""

    def __init__(self, event_shape, couplings, scaling):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.dim = math.prod(self.event_shape)
        self.couplings = nn.ModuleList(couplings)
        self.log_scale = nn.Parameter(torch.zeros(self.dim)) if scaling else None

    def forward(self, x):
        """x (B, *event_shape) -> z (B, D), log|det dz/dx| (B,)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"flow expects (B, {self.event_shape}), got {tuple(x.shape)}")
        h = x.reshape(x.shape[0], self.dim)
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for layer in self.couplings:
            h, ld = layer(h)
            logdet = logdet + ld
        if self.log_scale is not None:
            h = h * torch.exp(self.log_scale)
            logdet = logdet + self.log_scale.sum()
        return h, logdet

    def inverse(self, z):
        """z (B, D) -> x (B, *event_shape)."""
        h = z * torch.exp(-self.log_scale) if self.log_scale is not None else z
        for layer in reversed(self.couplings):
            h = layer.inverse(h)
        return h.reshape(z.shape[0], *self.event_shape)

    def log_prob(self, x):
        """Exact log-density (nats) of x (B, *event_shape) -> (B,)."""
        z, logdet = self(x)
        prior = -0.5 * (z.pow(2).sum(-1) + self.dim * math.log(2 * math.pi))
        return prior + logdet

    def nll(self, x):
        """Mean negative log-likelihood in nats over the batch -> scalar."""
        return -self.log_prob(x).mean()

    def sample(self, n, generator=None, device=None):
        """n draws by inverting z ~ N(0, I) -> (n, *event_shape)."""
        param = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, device=device or param.device,
                        dtype=param.dtype)
        return self.inverse(z)


def _event_shape(in_channels, image_size):
    return (in_channels,) if image_size is None else (in_channels, image_size, image_size)


def coupling_flow(coupling, in_channels, image_size, hidden, depth, num_layers, scaling):
    """``num_layers`` couplings of class ``coupling`` on alternating halves -> Flow."""
    shape = _event_shape(in_channels, image_size)
    dim = math.prod(shape)
    couplings = [coupling(dim, alternating_mask(shape, i % 2), hidden, depth)
                 for i in range(num_layers)]
    return Flow(shape, couplings, scaling=scaling)


def NICE(in_channels=2, image_size=None, hidden=256, depth=4, num_layers=4, num_classes=0):
    """NICE flow on (B, in_channels) vectors or (B, C, S, S) images (flattened)."""
    return coupling_flow(AdditiveCoupling, in_channels, image_size, hidden, depth, num_layers,
                         scaling=True)


def RealNVP(in_channels=2, image_size=None, hidden=256, depth=2, num_layers=8, num_classes=0):
    """RealNVP flow on (B, in_channels) vectors or (B, C, S, S) images (flattened)."""
    return coupling_flow(AffineCoupling, in_channels, image_size, hidden, depth, num_layers,
                         scaling=False)
