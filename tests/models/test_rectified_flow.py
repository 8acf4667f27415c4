"""Rectified flow: the closed-form Gaussian velocity pushed through the samplers lands on the
data's mean and covariance; timestep sampling and shift; the training loss target."""
import math

import pytest
import torch

from tests.models.oracles import GaussianVelocity
from ringflow.models.rectified_flow import RectifiedFlow, resolution_shift, shift_time


def linear_map_of_sampler(rf, net, steps, method):
    """The sampler is affine in the noise for Gaussian data: recover x = A z + b exactly."""
    basis = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()    # z = 0, e1, e2
    out = rf.sample(net, (3, 2), steps=steps, method=method, noise=basis)
    b = out[0]
    return out[1:].T - b[:, None], b                                 # A (2, 2), b (2,)


@pytest.mark.parametrize("method,steps,tol", [("euler", 200, 0.01), ("heun", 20, 0.003)])
def test_sampler_maps_noise_to_data_gaussian(gaussian, method, steps, tol):
    mu, cov = gaussian
    rf = RectifiedFlow()
    A, b = linear_map_of_sampler(rf, GaussianVelocity(mu, cov), steps, method)
    assert (b - mu).abs().max() < tol
    assert (A @ A.T - cov).abs().max() < tol


def test_heun_beats_euler_at_equal_steps(gaussian):
    mu, cov = gaussian
    rf, net = RectifiedFlow(), GaussianVelocity(mu, cov)
    err = {}
    for method in ("euler", "heun"):
        A, _ = linear_map_of_sampler(rf, net, 10, method)
        err[method] = (A @ A.T - cov).abs().max().item()
    assert err["heun"] < err["euler"] / 3


def test_shifted_grid_and_resolution_shift():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(shift_time(t, 1.0), t)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > t[1:-1]).all()
    assert resolution_shift(1024 * 1024, 256 * 256) == 4.0
    grid = RectifiedFlow(shift=3.0).timesteps(4)
    assert torch.allclose(grid, shift_time(torch.linspace(1, 0, 5, dtype=torch.float64), 3.0))


def test_logit_normal_and_uniform_time_sampling():
    g = torch.Generator().manual_seed(0)
    t = RectifiedFlow("logit_normal", logit_mean=0.5, logit_std=0.8).sample_t(100_000, generator=g)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean() - 0.5) < 0.01 and abs(logit.std() - 0.8) < 0.01
    u = RectifiedFlow("uniform").sample_t(100_000, generator=g)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    with pytest.raises(ValueError, match="t_sampling"):
        RectifiedFlow("beta")


def test_loss_target_is_noise_minus_data():
    rf = RectifiedFlow(label_dropout=0.0)
    x0 = torch.randn(8, 3)

    class Oracle(torch.nn.Module):                                   # reads the noise off x_t
        def forward(self, x, t, y=None):
            return (x - (1 - t[:, None]) * x0) / t[:, None] - x0

    assert rf.loss(Oracle(), x0).item() < 1e-10
    assert rf.loss(lambda x, t, y=None: torch.zeros_like(x), x0).item() > 0.5
    assert math.isfinite(rf.loss(Oracle(), x0, generator=torch.Generator().manual_seed(0)).item())
