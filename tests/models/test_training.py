"""Short training runs that must learn: on moons, a few hundred steps of rectified flow,
DDPM and RealNVP beat a Gaussian with the data's mean and covariance on sliced W2; on
8-gaussians, class labels + CFG put conditional samples in the right mode."""
import pytest
import torch

from ringflow.data import load_dataset
from ringflow.models.metrics import sliced_wasserstein
from ringflow.models.registry import build_network, build_objective

STEPS, BATCH = 300, 256


def train(net, objective, x, y=None, steps=STEPS, lr=3e-3):
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (BATCH,), generator=g)
        loss = objective.loss(net, x[idx], None if y is None else y[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.fixture(scope="module")
def moons():
    x, _ = load_dataset("moons", n=4000, seed=0)
    gauss = torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T))
    baseline = sliced_wasserstein(gauss.sample((2000,)), x, num_projections=128)
    assert baseline > 0.2
    return x, baseline


@pytest.mark.parametrize("name,objective_kw,sample_kw", [
    ("rectified_flow", dict(), dict(steps=20)),
    ("ddpm", dict(schedule="cosine"), dict(steps=20, sampler="ancestral")),
    ("realnvp", dict(), dict()),
])
def test_training_beats_moment_matched_gaussian(moons, name, objective_kw, sample_kw):
    x, baseline = moons
    torch.manual_seed(0)
    if name == "realnvp":
        net = build_network("realnvp", in_channels=2, hidden=64, depth=2, num_layers=6)
        objective = build_objective("realnvp")
    else:
        net = build_network("mlp", in_channels=2, hidden=64, depth=2)
        objective = build_objective(name, **objective_kw)
    train(net, objective, x)
    samples = objective.sample(net, (2000, 2), generator=torch.Generator().manual_seed(1),
                               **sample_kw)
    sw = sliced_wasserstein(samples, x, num_projections=128)
    print(f"{name}: SW2 {sw:.3f} vs moment-matched Gaussian {baseline:.3f}")
    assert sw < 0.6 * baseline


def test_class_conditional_guided_samples_land_in_their_mode():
    x, y = load_dataset("8gaussians", n=4000, seed=0)
    torch.manual_seed(0)
    net = build_network("mlp", in_channels=2, num_classes=8, hidden=64, depth=2)
    rf = build_objective("rectified_flow", label_dropout=0.2)
    train(net, rf, x, y)
    labels = torch.arange(8).repeat_interleave(50)
    samples = rf.sample(net, (400, 2), steps=20, y=labels, cfg_scale=2.0,
                        generator=torch.Generator().manual_seed(1))
    angle = torch.atan2(samples[:, 1], samples[:, 0])
    mode = torch.round(angle / (2 * torch.pi / 8)).long() % 8
    assert (mode == labels).float().mean() > 0.9
