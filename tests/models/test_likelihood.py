"""ODE likelihoods: with the exact Gaussian predictors, the rectified-flow ODE and DDIM's
probability-flow ODE reproduce the true log-density; divergence estimators agree."""
import torch

from ringflow.models.ddpm import DDPM
from ringflow.models.likelihood import divergence, ode_log_prob, rademacher
from ringflow.models.rectified_flow import RectifiedFlow
from tests.models.oracles import GaussianEps, GaussianVelocity


def test_divergence_exact_and_hutchinson_on_a_linear_field():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 5, generator=g, dtype=torch.float64)
    fn = lambda x, t: x @ W.T * t[:, None]                          # noqa: E731  div = t tr(W)
    x, t = torch.randn(4, 5, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    f, div = divergence(fn, x, t)
    assert torch.allclose(f, fn(x, t)) and torch.allclose(div, 0.5 * W.trace().expand(4))
    probes = rademacher(torch.zeros(20_000, 5, dtype=torch.float64), g)
    _, est = divergence(fn, x[:1].expand(20_000, 5), t[:1].expand(20_000), probes)
    assert abs(est.mean() - 0.5 * W.trace()) < 0.05 * W.abs().sum()


def test_rectified_flow_ode_likelihood_is_the_gaussian_density(gaussian):
    mu, cov = gaussian
    true = torch.distributions.MultivariateNormal(mu, cov)
    x = true.sample((32,))
    logp = RectifiedFlow().log_likelihood(GaussianVelocity(mu, cov), x, steps=20)
    assert (logp - true.log_prob(x)).abs().max() < 1e-3


def test_hutchinson_likelihood_is_unbiased_around_exact(gaussian):
    mu, cov = gaussian
    net, x = GaussianVelocity(mu, cov), mu.expand(4000, 2)
    exact = ode_log_prob(net, x[:1], 0.0, 1.0, steps=10, estimator="exact")
    est = ode_log_prob(net, x, 0.0, 1.0, steps=10, estimator="hutchinson",
                       generator=torch.Generator().manual_seed(0))
    assert est.std() > 1e-3                                          # really stochastic
    assert abs(est.mean() - exact) < 4 * est.std() / 4000 ** 0.5 + 1e-6


def test_ddpm_probability_flow_likelihood_is_the_gaussian_density(gaussian):
    mu, cov = gaussian
    for schedule in ("linear", "cosine"):
        ddpm = DDPM(schedule)
        a0 = ddpm.alpha_bar(torch.tensor(0)).item()                  # x is placed at step 0
        at_step0 = torch.distributions.MultivariateNormal(
            a0 ** 0.5 * mu, a0 * cov + (1 - a0) * torch.eye(2, dtype=torch.float64))
        x = at_step0.sample((32,))
        logp = ddpm.log_likelihood(GaussianEps(ddpm, mu, cov), x, steps=60)
        assert (logp - at_step0.log_prob(x)).abs().max() < 0.02, schedule
