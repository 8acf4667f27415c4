"""MMDiT: SD3's multimodal diffusion transformer (Esser et al. 2024, arXiv:2403.03206, fig. 2).

Two token streams, image patches and conditioning tokens, each with its own weights (adaLN
modulation, QKV, output projection, MLP), meet in one joint attention over the concatenated
sequence. Queries and keys are RMS-normalised per head with a learned scale (sec. 5.3.2, QK
normalisation). Image tokens carry fixed 2D sin-cos positions.

Conditioning tokens come from ``context`` (B, L, context_dim) when given (e.g. text-encoder
states); otherwise the class label is turned into ``context_tokens`` tokens (label embedding
plus a learned per-token offset). The adaLN vector is timestep + label embedding (SD3 uses
timestep + pooled text).

``net(x, t, y=None, context=None)``: x (B, C, H, W), t (B,) in [0, 1] -> (B, C, H, W).

    net = MMDiT(in_channels=1, image_size=8, patch_size=2, preset="T", num_classes=10)
    out = net(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, -1]))
"""
import torch
import torch.nn.functional as F
from torch import nn

from ringflow.models.dit import (DIT_PRESETS, FinalLayer, Patchify, _init_linear, feed_forward,
                                 modulate, resolve_preset, zero_linear)
from ringflow.models.embeddings import Conditioning


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class StreamHalf(nn.Module):
    """One stream's weights inside a joint block: adaLN, QKV with QK-norm, out-proj, MLP."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = RMSNorm(dim // num_heads), RMSNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), zero_linear(dim, 6 * dim))

    def qkv_heads(self, x, c):
        """(B, N, D) -> q, k, v each (B, heads, N, D/heads), plus the remaining modulation."""
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        b, n, d = x.shape
        qkv = self.qkv(modulate(self.norm1(x), sh1, sc1)).reshape(b, n, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v, (g1, sh2, sc2, g2)

    def finish(self, x, attn, mod):
        """Residual updates after joint attention; attn (B, N, D)."""
        g1, sh2, sc2, g2 = mod
        x = x + g1[:, None] * self.proj(attn)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class JointBlock(nn.Module):
    """(image (B, N, D), context (B, L, D), c (B, D)) -> same shapes, joint attention."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.img = StreamHalf(dim, num_heads, mlp_ratio)               # image-token weights
        self.ctx = StreamHalf(dim, num_heads, mlp_ratio)               # context-token weights

    def forward(self, x, ctx, c):
        qi, ki, vi, mod_i = self.img.qkv_heads(x, c)
        qc, kc, vc, mod_c = self.ctx.qkv_heads(ctx, c)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((qc, qi), (kc, ki), (vc, vi)))
        h = F.scaled_dot_product_attention(q, k, v)                # (B, heads, L+N, D/heads)
        h = h.transpose(1, 2).flatten(2)                           # (B, L+N, D)
        n_ctx = ctx.shape[1]
        return self.img.finish(x, h[:, n_ctx:], mod_i), self.ctx.finish(ctx, h[:, :n_ctx], mod_c)


class MMDiT(nn.Module):
    """SD3-style MMDiT; presets shared with DiT (``DIT_PRESETS``). See module doc."""

    def __init__(self, in_channels=4, image_size=32, patch_size=2, hidden_size=None, depth=None,
                 num_heads=None, preset="T", mlp_ratio=4.0, num_classes=0, context_dim=None,
                 context_tokens=4):
        super().__init__()
        dim, depth, heads = resolve_preset(DIT_PRESETS, preset, hidden_size, depth, num_heads)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.patch = Patchify(in_channels, image_size, patch_size, dim)
        self.cond = Conditioning("MMDiT", in_channels, image_size, dim, num_classes)
        self.context_proj = nn.Linear(context_dim, dim) if context_dim else None
        self.ctx_tokens = nn.Parameter(torch.randn(context_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(JointBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(dim, patch_size * patch_size * in_channels)
        self.apply(_init_linear)

    def conditioning(self, x, t, y, context):
        """-> adaLN vector (B, D) and context tokens (B, L, D)."""
        c, label = self.cond.embed(x, t, y)
        if context is not None:
            if self.context_proj is None:
                raise ValueError("pass context_dim=... at construction to use context tokens")
            return c, self.context_proj(context)
        base = label[:, None] if label is not None else torch.zeros_like(c)[:, None]
        return c, base + self.ctx_tokens[None]                     # (B, L, D)

    def forward(self, x, t, y=None, context=None):
        c, ctx = self.conditioning(x, t, y, context)
        h = self.patch(x)                                          # (B, N, D)
        for block in self.blocks:
            h, ctx = block(h, ctx, c)
        return self.patch.unpatchify(self.final(h, c))
