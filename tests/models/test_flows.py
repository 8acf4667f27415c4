"""NICE and RealNVP: invertibility, log-determinants against autograd, exact likelihood."""
import math

import pytest
import torch

from ringflow.models.flows import NICE, AdditiveCoupling, RealNVP, alternating_mask
from ringflow.models.likelihood import FlowLikelihood, bits_per_dim, dequantize


def randomise(flow, seed=0):
    """Zero-initialised outputs make a flow the identity; perturb every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return flow.double()


FLOWS = {
    "nice-vec": lambda: NICE(in_channels=4, hidden=16, depth=2, num_layers=4),
    "realnvp-vec": lambda: RealNVP(in_channels=4, hidden=16, depth=2, num_layers=4),
    "realnvp-img": lambda: RealNVP(in_channels=1, image_size=2, hidden=16, depth=1, num_layers=3),
}


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_of_forward_is_identity(name):
    torch.manual_seed(0)
    flow = randomise(FLOWS[name]())
    x = torch.randn(32, *flow.event_shape, dtype=torch.float64)
    z, _ = flow(x)
    assert (z.reshape(x.shape) - x).abs().max() > 1e-2              # not the identity
    assert (flow.inverse(z) - x).abs().max() <= 1e-4


@pytest.mark.parametrize("name", FLOWS)
def test_logdet_matches_autograd_jacobian(name):
    torch.manual_seed(1)
    flow = randomise(FLOWS[name](), seed=1)
    x = torch.randn(3, *flow.event_shape, dtype=torch.float64)
    _, logdet = flow(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        _, expected = torch.linalg.slogdet(jac.reshape(flow.dim, flow.dim))
        assert torch.allclose(logdet[i], expected, atol=1e-8)


def test_nice_coupling_logdet_is_exactly_zero():
    layer = AdditiveCoupling(6, alternating_mask((6,), 0), hidden=8, depth=1)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(5, 6)
    y, logdet = layer(x)
    assert (y - x).abs().max() > 1e-3
    assert torch.equal(logdet, torch.zeros(5))
    assert torch.equal(y[:, ::2], x[:, ::2])                         # conditioning half untouched


def test_log_prob_of_identity_flow_is_standard_normal():
    flow = RealNVP(in_channels=3, hidden=8, num_layers=2).double()   # zero-init: identity
    x = torch.randn(10, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert torch.allclose(flow.log_prob(x), expected)


def test_sample_is_inverse_of_prior_draw():
    flow = randomise(NICE(in_channels=2, hidden=8, num_layers=2))
    x = flow.sample(50, generator=torch.Generator().manual_seed(3))
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(flow(x)[0], z, atol=1e-8)


def test_dequantize_stays_in_bin_and_bits_per_dim_of_uniform_density():
    levels = 17
    x = torch.randint(0, levels, (1000, 4)).float() / (levels - 1) * 2 - 1
    xd = dequantize(x, levels, torch.Generator().manual_seed(0))
    width = 2 / (levels - 1)
    assert ((xd - x).abs() <= width / 2 + 1e-6).all() and (xd != x).all()
    # a uniform density on the dequantized cube [-1-w/2, 1+w/2]^4 costs log2(levels) bits/dim
    log_p = torch.full((1000,), -4 * math.log(2 + width))
    assert torch.allclose(bits_per_dim(log_p, 4, levels), torch.tensor(math.log2(levels)))


def test_flow_objective_loss_is_nll_per_dim_and_sample_checks_shape():
    flow = RealNVP(in_channels=2, hidden=8, num_layers=2)
    objective = FlowLikelihood()
    x = torch.randn(64, 2)
    assert torch.allclose(objective.loss(flow, x), flow.nll(x) / 2)
    assert objective.sample(flow, (7, 2)).shape == (7, 2)
    with pytest.raises(ValueError, match="samples"):
        objective.sample(flow, (7, 3))
