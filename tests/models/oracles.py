"""Closed-form networks for Gaussian data.

For data x0 ~ N(mu, S) the optimal predictions are affine in x and known exactly, so the
samplers and likelihood integrators can be checked without training anything. Both oracles
return x @ gain(t)^T + offset(t), computed once per distinct time in the batch.
"""
import torch
from torch import nn


class _AffineOracle(nn.Module):
    def __init__(self, mu, cov):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)

    def forward(self, x, t, y=None):
        out = torch.empty_like(x)
        for value in t.unique():
            rows = t == value
            gain, offset = self.affine(value.double().item())
            out[rows] = x[rows] @ gain.T.to(x.dtype) + offset.to(x.dtype)
        return out


class GaussianVelocity(_AffineOracle):
    """Exact rectified-flow velocity E[eps - x0 | x_t = x] for x0 ~ N(mu, S), x_t=(1-t)x0+t eps.

    Cov(eps - x0, x_t) = t I - (1-t) S, Cov(x_t) = (1-t)^2 S + t^2 I, E[x_t] = (1-t) mu.
    """

    def affine(self, t):
        eye = torch.eye(len(self.mu), dtype=self.cov.dtype)
        cov_t = (1 - t) ** 2 * self.cov + t ** 2 * eye
        gain = (t * eye - (1 - t) * self.cov) @ torch.linalg.inv(cov_t)
        return gain, -self.mu - gain @ ((1 - t) * self.mu)


class GaussianEps(_AffineOracle):
    """Exact DDPM noise prediction E[eps | x_t] = sqrt(1-a) C^-1 (x - sqrt(a) mu),
    with C = a S + (1-a) I.

    alpha_bar a(t) is the objective's continuous schedule (log-linear between grid points).
    """

    def __init__(self, ddpm, mu, cov):
        super().__init__(mu, cov)
        self.ddpm = ddpm

    def affine(self, t):
        k = t * self.ddpm.T                                         # continuous grid index
        lo = min(int(k), self.ddpm.T - 1)
        grid = self.ddpm.log_abar
        a = (grid[lo] + (k - lo) * (grid[lo + 1] - grid[lo])).exp().item()
        eye = torch.eye(len(self.mu), dtype=self.cov.dtype)
        gain = (1 - a) ** 0.5 * torch.linalg.inv(a * self.cov + (1 - a) * eye)
        return gain, -gain @ (a ** 0.5 * self.mu)
