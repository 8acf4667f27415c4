"""Shared fixtures for tests/models: closed-form networks for Gaussian data.

For data x0 ~ N(mu, S) the optimal predictions are linear in x and known exactly, so the
samplers and likelihood integrators can be checked without training anything.
"""
import pytest
import torch
from torch import nn

torch.set_num_threads(2)


class GaussianVelocity(nn.Module):
    """Exact rectified-flow velocity E[eps - x0 | x_t = x] for x0 ~ N(mu, S), x_t=(1-t)x0+t eps.

    Cov(eps - x0, x_t) = t I - (1-t) S, Cov(x_t) = (1-t)^2 S + t^2 I, E[x_t] = (1-t) mu.
    """

    def __init__(self, mu, cov):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)

    def forward(self, x, t, y=None):
        t = t.to(x.dtype)[:, None, None]                            # (B, 1, 1)
        eye = torch.eye(len(self.mu), dtype=x.dtype)
        c = (1 - t) ** 2 * self.cov + t ** 2 * eye                  # (B, D, D)
        cross = t * eye - (1 - t) * self.cov                        # (B, D, D)
        centred = x - (1 - t[:, :, 0]) * self.mu                    # (B, D)
        gain_x = (cross @ torch.linalg.solve(c, centred[..., None]))[..., 0]
        return -self.mu + gain_x


class GaussianEps(nn.Module):
    """Exact DDPM noise prediction E[eps | x_t] = sqrt(1-a) C^-1 (x - sqrt(a) mu), C = a S + (1-a) I.

    alpha_bar a(t) comes from the objective's continuous schedule.
    """

    def __init__(self, ddpm, mu, cov):
        super().__init__()
        self.ddpm = ddpm
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)

    def forward(self, x, t, y=None):
        k = t.double() * self.ddpm.T                                # continuous grid index
        lo = k.floor().long().clamp(max=self.ddpm.T - 1)
        grid = self.ddpm.log_abar
        a = (grid[lo] + (k - lo) * (grid[lo + 1] - grid[lo])).exp().to(x.dtype)[:, None, None]
        eye = torch.eye(len(self.mu), dtype=x.dtype)
        c = a * self.cov + (1 - a) * eye                            # (B, D, D)
        centred = x - a[:, :, 0].sqrt() * self.mu
        return (1 - a[:, :, 0]).sqrt() * torch.linalg.solve(c, centred[..., None])[..., 0]


@pytest.fixture
def gaussian():
    """A 2D Gaussian with correlated, unequal variances: (mu (2,), cov (2, 2)), float64."""
    mu = torch.tensor([0.7, -0.4], dtype=torch.float64)
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    return mu, cov
