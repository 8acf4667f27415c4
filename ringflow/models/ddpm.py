"""DDPM (Ho et al. 2020, arXiv:2006.11239) and DDIM (Song et al. 2021, arXiv:2010.02502).

Discrete steps i = 0..T-1 with alpha_bar_i = prod_{j<=i} (1 - beta_j); the forward marginal is
x_i = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) eps (eq. 4). The network predicts eps and
is trained with the simple loss |eps - eps_hat|^2 (eq. 14).

Time passed to networks: t = (i + 1) / T in (0, 1], the continuous time whose log alpha_bar(t)
interpolates the grid linearly (alpha_bar(0) = 1, alpha_bar(k/T) = prod_{j<k}(1 - beta_j)).

Sampling follows DDIM's generalised update (eq. 12) on a sub-sequence of steps, "leading"
(DDIM sec. 4.2: 0, T/S, 2T/S, ...) or "trailing" (Lin et al. 2024: ..., T-1), ending at
alpha_bar = 1. Leading is the default: trailing starts at step T-1, where the cosine
schedule's alpha_bar ~ 1e-9 amplifies any eps error by 1/sqrt(alpha_bar) in x0_hat.
    x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z,
    sigma  = eta sqrt((1 - a_prev)/(1 - a)) sqrt(1 - a/a_prev)          (eq. 16)
eta = 0 is deterministic DDIM; eta = 1 on all T steps is exactly DDPM's ancestral sampler with
the posterior variance beta_tilde (eq. 7/11), which is what ``sampler="ancestral"`` runs.

    ddpm = DDPM(schedule="cosine")
    loss = ddpm.loss(net, x0, y)                                      # scalar
    x = ddpm.sample(net, (16, 1, 8, 8), steps=50, sampler="ddim", y=y, cfg_scale=2.0)
    logp = ddpm.log_likelihood(net, x0)                               # (B,) nats, PF-ODE
"""
import math

import torch

from ringflow.models.embeddings import drop_labels, guided, net_device
from ringflow.models.likelihood import ode_log_prob


def beta_schedule(name, timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """betas (T,) float64: "linear" (Ho et al. sec. 4) or "cosine" (Nichol & Dhariwal, eq. 17)."""
    if name == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule must be 'linear' or 'cosine', got {name!r}")


class DDPM:
    """Epsilon-prediction diffusion objective; holds only the schedule (no parameters).

    clip_denoised: None, or a bound c: samplers clamp x0_hat to [-c, c] (1.0 for images in
    [-1, 1], as in Ho et al.'s code), which tames eps errors amplified by 1/sqrt(alpha_bar).
    """

    def __init__(self, schedule="linear", timesteps=1000, beta_start=1e-4, beta_end=0.02,
                 label_dropout=0.1, clip_denoised=None, spacing="leading"):
        if spacing not in ("leading", "trailing"):
            raise ValueError(f"spacing must be 'leading' or 'trailing', got {spacing!r}")
        self.T, self.label_dropout, self.clip = timesteps, label_dropout, clip_denoised
        self.spacing = spacing
        self.betas = beta_schedule(schedule, timesteps, beta_start, beta_end)
        # log alpha_bar on the grid k = 0..T (k = i + 1 for step i), float64
        self.log_abar = torch.cat([torch.zeros(1, dtype=torch.float64),
                                   torch.cumsum(torch.log1p(-self.betas), 0)])

    def alpha_bar(self, i):
        """alpha_bar_i for integer steps i (any shape; -1 gives 1) -> float64 like i."""
        return self.log_abar[(i + 1).cpu()].exp().to(i.device)

    def net_time(self, i):
        """Integer steps (B,) -> network time (i + 1) / T as float32 (B,)."""
        return (i.float() + 1) / self.T

    def q_sample(self, x0, i, noise):
        """Forward marginal (eq. 4): x0, noise (B, ...), i (B,) -> x_i (B, ...)."""
        a = self.alpha_bar(i).to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, net, x0, y=None, generator=None):
        """Mean |eps - net(x_i, t, y)|^2 over uniform steps; labels dropped for CFG -> scalar."""
        i = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        y = drop_labels(y, self.label_dropout, generator)
        return (net(self.q_sample(x0, i, noise), self.net_time(i), y) - noise).pow(2).mean()

    def timesteps(self, steps):
        """Descending sub-sequence of ``steps`` integer steps (``spacing``) -> (steps,)."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be in [1, {self.T}], got {steps}")
        grid = torch.arange(steps, dtype=torch.float64) * self.T / steps     # 0, T/S, ...
        grid = grid if self.spacing == "leading" else grid + self.T / steps - 1
        return grid.round().long().flip(0)

    def ddim_step(self, x, eps, i, i_prev, eta, noise=None):
        """One generalised DDIM update (eq. 12) from step i to i_prev (ints, -1 = data)."""
        a, a_prev = (self.alpha_bar(torch.tensor(k)).item() for k in (i, i_prev))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if self.clip is not None:                                   # Ho et al.'s clipped x0_hat
            x0 = x0.clamp(-self.clip, self.clip)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        return x_prev + sigma * noise if sigma > 0 else x_prev

    @torch.no_grad()
    def sample(self, net, shape, *, steps=None, y=None, cfg_scale=1.0, generator=None,
               sampler="ancestral", eta=None, noise=None, device=None):
        """Draw samples (shape) from noise with the ancestral (eta=1) or DDIM sampler.

        steps None means all T. sampler "ddim" uses eta (default 0, deterministic); "ancestral"
        forces eta = 1. ``noise`` (shape) fixes x_T. Device: ``noise``'s, else ``device``, else
        the network's. ``generator`` must live on that device.
        """
        if sampler not in ("ancestral", "ddim"):
            raise ValueError(f"sampler must be 'ancestral' or 'ddim', got {sampler!r}")
        eta = 1.0 if sampler == "ancestral" else (0.0 if eta is None else eta)
        seq = self.timesteps(steps or self.T).tolist()
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=net_device(net, device))
        x = noise
        for i, i_prev in zip(seq, seq[1:] + [-1]):
            t = torch.full((x.shape[0],), (i + 1) / self.T, device=x.device)
            eps = guided(net, x, t, y, cfg_scale)
            z = torch.randn(x.shape, generator=generator, device=x.device) if eta > 0 else None
            x = self.ddim_step(x, eps, i, i_prev, eta, z)
        return x

    @torch.no_grad()
    def ddim_invert(self, net, x0, *, steps=50, y=None, cfg_scale=1.0):
        """Run deterministic DDIM from data to noise: x0 (B, ...) -> x_{T-1} (B, ...).

        Each step evaluates eps_hat at the current point and the next (noisier) time, the
        usual approximation that makes ``sample(..., sampler="ddim", noise=result)`` return x0
        up to the discretisation error.
        """
        seq = self.timesteps(steps).flip(0).tolist()
        x = x0
        for i_prev, i in zip([-1] + seq[:-1], seq):
            t = torch.full((x.shape[0],), (i + 1) / self.T, device=x.device)
            eps = guided(net, x, t, y, cfg_scale)
            a, a_prev = (self.alpha_bar(torch.tensor(k)).item() for k in (i, i_prev))
            x0_hat = (x - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
            x = math.sqrt(a) * x0_hat + math.sqrt(1 - a) * eps
        return x

    def time_of_log_abar(self, log_abar):
        """Continuous time t in [0, 1] where the interpolated log alpha_bar equals ``log_abar``."""
        grid = -self.log_abar                                       # increasing in k
        target = torch.tensor([-log_abar], dtype=torch.float64)
        k = torch.searchsorted(grid, target).clamp(1, self.T)
        lo, hi = grid[k - 1], grid[k]
        frac = ((-log_abar - lo) / (hi - lo)).clamp(0, 1)
        return ((k - 1 + frac) / self.T).item()

    def log_likelihood(self, net, x, y=None, *, steps=100, estimator="auto", generator=None):
        """log-density (B,) in nats of x (B, ...) under the probability-flow ODE of DDIM.

        DDIM's ODE (eq. 14) in xbar = x / sqrt(a), sigma = sqrt((1-a)/a) is dxbar/dsigma =
        eps_hat(x, t); it is integrated on a grid uniform in log sigma from step 0 (where x is
        placed: sigma_0 ~ 0.01 for the linear schedule) to step T-1, with prior
        N(0, (1 + sigma^2) I) on xbar, then mapped back: log p(x) = log p(xbar) - D/2 log a_0.
        """
        log_a0, log_a1 = self.log_abar[1].item(), self.log_abar[-1].item()
        u0, u1 = (0.5 * math.log(math.expm1(-la)) for la in (log_a0, log_a1))  # log sigma
        dim = x[0].numel()

        def velocity(xbar, u):                                      # dxbar/du = sigma eps_hat
            log_sigma = u[0].item()
            log_a = -math.log1p(math.exp(2 * log_sigma))
            t = torch.full_like(u, self.time_of_log_abar(log_a))
            return math.exp(log_sigma) * net(xbar * math.exp(0.5 * log_a), t, y)

        def prior(xbar):
            var = 1 + math.exp(2 * u1)
            return -0.5 * (xbar.flatten(1).pow(2).sum(-1) / var + dim * math.log(2 * math.pi * var))

        xbar = x * math.exp(-0.5 * log_a0)
        logp = ode_log_prob(velocity, xbar, u0, u1, steps=steps, prior_log_prob=prior,
                            estimator=estimator, generator=generator)
        return logp - 0.5 * dim * log_a0
