"""A small KL-regularised convolutional autoencoder, the kind latent diffusion trains in
(Rombach et al. 2022, arXiv:2112.10752, sec. 3 and app. G; SD3 uses 16 latent channels, Esser
et al. 2024 sec. 5.2.1), and ``VAELoss``, the objective that trains it.

The encoder halves the resolution ``log2(factor)`` times with stride-2 convolutions (28 -> 14
-> 7 for MNIST at factor 4) and outputs a diagonal Gaussian posterior (mean, log-variance) with
``latent_channels`` channels; the decoder mirrors it with nearest-neighbour upsampling.

    vae = AutoEncoder(in_channels=1, image_size=28, latent_channels=4, factor=4)
    mean, logvar = vae.encode(x)                 # x (B, 1, 28, 28) -> 2 x (B, 4, 7, 7)
    x_hat = vae.decode(mean)                     # (B, 1, 28, 28)
    loss = VAELoss(kl_weight=1e-4).loss(vae, x)  # scalar
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels):
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) at a fixed width."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3,
                                  padding=1), _norm(channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class AutoEncoder(nn.Module):
    """Conv VAE: (B, C, H, W) <-> (B, latent_channels, H / factor, W / factor).

    Widths double at each halving from ``base_channels``; the residual blocks sit at the
    latent resolution only, where they are cheap (a CPU trains it in minutes). The image side
    must divide by ``factor``. The objective calls ``encode``/``decode`` (there is no
    ``forward``); ``num_classes`` is accepted for the registry and ignored.
    """

    def __init__(self, in_channels=1, image_size=28, latent_channels=4, factor=4,
                 base_channels=16, num_res_blocks=2, num_classes=0):
        super().__init__()
        levels = int(math.log2(factor)) if factor >= 1 else -1
        if factor < 1 or 2 ** levels != factor:
            raise ValueError(f"factor must be a power of 2 (1, 2, 4, ...), got {factor}")
        if image_size % factor:
            raise ValueError(f"image_size {image_size} does not divide by factor {factor}; "
                             "choose a factor that divides it (28: 2 or 4)")
        widths = [base_channels * 2 ** i for i in range(levels + 1)]
        self.in_channels, self.latent_channels, self.factor = in_channels, latent_channels, factor
        self.latent_size = image_size // factor
        res = [ResBlock(widths[-1]) for _ in range(2 * num_res_blocks)]
        self.encoder = nn.Sequential(*self._down(in_channels, widths), *res[:num_res_blocks],
                                     _norm(widths[-1]), nn.SiLU(),
                                     nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
                                     *res[num_res_blocks:], *self._up(in_channels, widths))

    @staticmethod
    def _down(in_channels, widths):
        layers = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for a, b in zip(widths[:-1], widths[1:]):                        # halve H, W
            layers += [_norm(a), nn.SiLU(), nn.Conv2d(a, b, 3, stride=2, padding=1)]
        return layers

    @staticmethod
    def _up(in_channels, widths):
        layers = []
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):            # double H, W
            layers += [_norm(a), nn.SiLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(a, b, 3, padding=1)]
        return layers + [_norm(widths[0]), nn.SiLU(),
                         nn.Conv2d(widths[0], in_channels, 3, padding=1)]

    def latent_shape(self):
        """(latent_channels, H / factor, W / factor)."""
        return (self.latent_channels, self.latent_size, self.latent_size)

    def encode(self, x):
        """x (B, C, H, W) -> posterior mean, log-variance, each (B, latent_channels, h, w)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AutoEncoder expects (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)          # exp() stays finite (as SD's)

    def decode(self, z):
        """z (B, latent_channels, h, w) -> images (B, C, h * factor, w * factor)."""
        return self.decoder(z)


def psnr(x_hat, x, value_range=2.0):
    """Peak signal-to-noise ratio in dB per image (B,), images spanning ``value_range``
    (2 for [-1, 1]): 10 log10(range^2 / MSE)."""
    mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(value_range ** 2 / mse.clamp(min=1e-12))


class VAELoss:
    """The autoencoder's objective: per-pixel MSE + ``kl_weight`` * KL(q(z|x) || N(0, I)) per
    latent element, with z drawn from the posterior (reparameterised). Labels are ignored.

    ``sample`` decodes prior draws (what the VAE generates by itself); ``reconstruct`` decodes
    the posterior mean of given images (what latent diffusion relies on).
    """

    def __init__(self, kl_weight=1e-4):
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = kl_weight

    def loss(self, net, x0, y=None, generator=None):
        mean, logvar = net.encode(x0)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + (0.5 * logvar).exp() * eps
        recon = F.mse_loss(net.decode(z), x0)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return recon + self.kl_weight * kl

    @torch.no_grad()
    def sample(self, net, shape, *, steps=None, y=None, cfg_scale=1.0, generator=None):
        """Decode N(0, I) latents -> images (shape); steps, y and cfg_scale do not apply."""
        device = next(net.parameters()).device
        z = torch.randn((shape[0], *net.latent_shape()), generator=generator, device=device)
        return net.decode(z)

    @torch.no_grad()
    def reconstruct(self, net, x):
        """x (B, C, H, W) -> decode(posterior mean) (B, C, H, W)."""
        return net.decode(net.encode(x)[0])
