"""DDPM/DDIM: schedules, forward marginals, the ancestral step against Ho et al.'s formula,
DDIM determinism and inversion, sampling Gaussian data with the exact noise predictor."""
import math

import pytest
import torch

from tests.models.oracles import GaussianEps
from ringflow.models.ddpm import DDPM, beta_schedule
from ringflow.models.mlp import MLP


def test_linear_and_cosine_schedules():
    linear = beta_schedule("linear")
    assert linear.shape == (1000,) and linear[0] == 1e-4 and abs(linear[-1] - 0.02) < 1e-12
    cosine_abar = torch.cumprod(1 - beta_schedule("cosine"), 0)
    s, t = 0.008, torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    assert torch.allclose(cosine_abar[:990], f[:990], rtol=1e-9)      # before beta clipping
    with pytest.raises(ValueError, match="schedule"):
        beta_schedule("quadratic")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_marginal_moments(schedule):
    ddpm = DDPM(schedule)
    g = torch.Generator().manual_seed(0)
    x0 = 0.5 + 2.0 * torch.randn(200_000, 1, generator=g, dtype=torch.float64)  # N(0.5, 4)
    for i in (0, 250, 999):
        steps = torch.full((len(x0),), i)
        xt = ddpm.q_sample(x0, steps, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        a = ddpm.alpha_bar(torch.tensor(i)).item()
        assert abs(xt.mean().item() - math.sqrt(a) * 0.5) < 0.02
        assert abs(xt.var().item() - (4 * a + 1 - a)) < 0.03 * (4 * a + 1 - a)


def test_alpha_bar_grid_and_network_time():
    ddpm = DDPM("linear")
    steps = torch.tensor([-1, 0, 999])
    expected = torch.tensor([1.0, 1 - 1e-4, torch.cumprod(1 - ddpm.betas, 0)[-1].item()])
    assert torch.allclose(ddpm.alpha_bar(steps), expected.double())
    assert torch.equal(ddpm.net_time(torch.tensor([0, 999])), torch.tensor([0.001, 1.0]))
    assert ddpm.timesteps(4).tolist() == [750, 500, 250, 0]
    assert DDPM(spacing="trailing").timesteps(4).tolist() == [999, 749, 499, 249]
    for spacing in ("leading", "trailing"):
        assert DDPM(spacing=spacing).timesteps(1000).tolist() == list(range(999, -1, -1))


def test_eta_one_full_step_is_ho_et_al_ancestral_step():
    ddpm = DDPM("linear")
    x, eps, z = torch.randn(3, 8, dtype=torch.float64).unbind(0)
    for i in (999, 500, 1):
        beta = ddpm.betas[i].item()
        a, a_prev = (ddpm.alpha_bar(torch.tensor(k)).item() for k in (i, i - 1))
        var = (1 - a_prev) / (1 - a) * beta                          # beta tilde, eq. 7
        expected = (x - beta / math.sqrt(1 - a) * eps) / math.sqrt(1 - beta) + math.sqrt(var) * z
        assert torch.allclose(ddpm.ddim_step(x, eps, i, i - 1, 1.0, z), expected, atol=1e-10)


def test_ddim_eta0_is_deterministic_and_ancestral_is_not():
    torch.manual_seed(0)
    net, ddpm = MLP(dim=2, hidden=16, depth=1), DDPM("linear")
    noise = torch.randn(16, 2)
    a = ddpm.sample(net, (16, 2), steps=20, sampler="ddim", noise=noise,
                    generator=torch.Generator().manual_seed(1))
    b = ddpm.sample(net, (16, 2), steps=20, sampler="ddim", noise=noise,
                    generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = ddpm.sample(net, (16, 2), steps=20, noise=noise, generator=torch.Generator().manual_seed(1))
    d = ddpm.sample(net, (16, 2), steps=20, noise=noise, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_inversion_round_trip(gaussian, schedule):
    mu, cov = gaussian
    ddpm = DDPM(schedule)
    net = GaussianEps(ddpm, mu, cov)
    x0 = torch.distributions.MultivariateNormal(mu, cov).sample((64,))
    errors = []
    for steps in (50, 200):
        noise = ddpm.ddim_invert(net, x0, steps=steps)
        back = ddpm.sample(net, x0.shape, steps=steps, sampler="ddim", noise=noise)
        errors.append((back - x0).abs().max().item())
    assert errors[1] < 0.03 and errors[1] < errors[0] / 2             # converges with steps


@pytest.mark.parametrize("sampler,steps", [("ddim", 100), ("ancestral", None)])
def test_exact_eps_sampler_reaches_data_moments(gaussian, sampler, steps):
    mu, cov = gaussian
    ddpm = DDPM("linear")
    g = torch.Generator().manual_seed(0)
    x = ddpm.sample(GaussianEps(ddpm, mu, cov), (4000, 2), steps=steps, sampler=sampler,
                    noise=torch.randn(4000, 2, generator=g, dtype=torch.float64), generator=g)
    assert (x.mean(0) - mu).abs().max() < 0.04
    assert (torch.cov(x.T) - cov).abs().max() < 0.05
