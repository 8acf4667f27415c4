"""The autoencoder and its objective against closed forms: shapes per factor, the KL term
against torch.distributions, PSNR against its definition."""

import math

import pytest
import torch

from ringflow.models import AutoEncoder, VAELoss, build_network, build_objective, psnr


@pytest.mark.parametrize("channels,factor", [(4, 4), (16, 4), (4, 2)])
def test_latents_have_the_asked_channels_at_the_asked_factor(channels, factor):
    vae = build_network("vae", in_channels=1, image_size=28, latent_channels=channels,
                        factor=factor)
    mean, logvar = vae.encode(torch.randn(3, 1, 28, 28))
    side = 28 // factor
    assert mean.shape == logvar.shape == (3, channels, side, side) == (3, *vae.latent_shape())
    assert vae.decode(mean).shape == (3, 1, 28, 28)


def test_bad_factors_name_the_fix():
    with pytest.raises(ValueError, match="power of 2"):
        AutoEncoder(image_size=28, factor=3)
    with pytest.raises(ValueError, match="does not divide"):
        AutoEncoder(image_size=28, factor=8)


def test_loss_is_mse_plus_weighted_kl_of_the_posterior():
    torch.manual_seed(0)
    vae, x = AutoEncoder(image_size=8, factor=2, base_channels=8), torch.rand(4, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(3)
    got = VAELoss(kl_weight=0.5).loss(vae, x, generator=g)
    mean, logvar = vae.encode(x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    z = mean + (0.5 * logvar).exp() * eps
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
    want = (vae.decode(z) - x).pow(2).mean() + 0.5 * kl
    assert torch.allclose(got, want, atol=1e-6)


def test_psnr_is_ten_log10_peak_squared_over_mse():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = x.clone()
    x_hat[0] += 0.1                                   # MSE 0.01 on a range of 2: 10 log10(400)
    x_hat[1, :, :2] += 0.2                            # MSE 0.02
    assert psnr(x_hat, x).tolist() == pytest.approx([10 * math.log10(400), 10 * math.log10(200)])


def test_sample_decodes_prior_draws_and_reconstruct_the_posterior_mean():
    vae, obj = AutoEncoder(image_size=8, factor=2, base_channels=8), build_objective("vae")
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(obj.reconstruct(vae, x), vae.decode(vae.encode(x)[0]))
    s = obj.sample(vae, (6, 1, 8, 8), steps=1, generator=torch.Generator().manual_seed(0))
    z = torch.randn((6, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, vae.decode(z))
