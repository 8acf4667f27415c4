"""MMDiT: SD3's multimodal diffusion transformer (Esser et al. 2024, arXiv:2403.03206, fig. 2).

Two token streams, image patches and conditioning tokens, each with its own weights (adaLN
modulation, QKV, output projection, MLP), meet in one joint attention over the concatenated
sequence. Queries and keys are RMS-normalised per head with a learned scale (sec. 5.3.2, QK
normalisation). Image tokens carry fixed 2D sin-cos positions.

Conditioning tokens come from ``context`` (B, L, context_dim) when given (e.g. text-encoder
states); otherwise the class label is turned into ``context_tokens`` tokens (label embedding
plus a learned per-token offset), and the adaLN vector is timestep + label embedding.
With ``text=True`` the conditioning is SD3's: the class name as a character-token sequence
(``text.TextTokens``: "digit 7" -> 7 tokens), timestep + pooled text through adaLN, and a
dropped label (CFG's unconditional half) masks the whole text stream out of the attention.

``net(x, t, y=None, context=None)``: x (B, C, H, W), t (B,) in [0, 1] -> (B, C, H, W).

    net = MMDiT(in_channels=1, image_size=8, patch_size=2, preset="T", num_classes=10)
    out = net(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, -1]))
"""
import torch
import torch.nn.functional as F
from torch import nn

from ringflow.models.dit import (DIT_PRESETS, FinalLayer, Patchify, _init_linear, feed_forward,
                                 modulate, resolve_preset, zero_linear)
from ringflow.models.embeddings import NULL_LABEL, Conditioning
from ringflow.models.text import TextTokens


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class StreamHalf(nn.Module):
    """One stream's weights inside a joint block: adaLN, QKV with QK-norm, out-proj, MLP.

    ``pre_only``: the context half of the last block, whose output nobody reads, gives keys and
    values only (SD3's last block: no context query, out-proj or MLP).
    """

    def __init__(self, dim, num_heads, mlp_ratio, pre_only=False):
        super().__init__()
        self.heads, self.pre_only = num_heads, pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, (2 if pre_only else 3) * dim)
        self.q_norm = None if pre_only else RMSNorm(dim // num_heads)
        self.k_norm = RMSNorm(dim // num_heads)
        self.ada = nn.Sequential(nn.SiLU(), zero_linear(dim, (2 if pre_only else 6) * dim))
        if not pre_only:
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = feed_forward(dim, mlp_ratio)

    def qkv_heads(self, x, c):
        """(B, N, D) -> q (None if pre_only), k, v each (B, heads, N, D/heads), the rest of
        the modulation."""
        sh1, sc1, *mod = self.ada(c).chunk(2 if self.pre_only else 6, dim=-1)
        b, n, d = x.shape
        parts = 2 if self.pre_only else 3
        qkv = self.qkv(modulate(self.norm1(x), sh1, sc1)).reshape(b, n, parts, self.heads, -1)
        *q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return (self.q_norm(q[0]) if q else None), self.k_norm(k), v, mod

    def finish(self, x, attn, mod):
        """Residual updates after joint attention; attn (B, N, D)."""
        g1, sh2, sc2, g2 = mod
        x = x + g1[:, None] * self.proj(attn)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class JointBlock(nn.Module):
    """(image (B, N, D), context (B, L, D), c (B, D)) -> same shapes, joint attention.

    ``last``: the context stream gives keys and values only and comes out as None.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, last=False):
        super().__init__()
        self.img = StreamHalf(dim, num_heads, mlp_ratio)               # image-token weights
        self.ctx = StreamHalf(dim, num_heads, mlp_ratio, pre_only=last)  # context-token weights

    def forward(self, x, ctx, c, mask=None):
        """mask (B, 1, 1, L+N) bool | None: False keys are not attended to (a dropped text)."""
        qi, ki, vi, mod_i = self.img.qkv_heads(x, c)
        qc, kc, vc, mod_c = self.ctx.qkv_heads(ctx, c)
        k, v = torch.cat((kc, ki), dim=2), torch.cat((vc, vi), dim=2)
        q = qi if qc is None else torch.cat((qc, qi), dim=2)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, [L+]N, D/heads)
        h = h.transpose(1, 2).flatten(2)                           # (B, [L+]N, D)
        if qc is None:
            return self.img.finish(x, h, mod_i), None
        n_ctx = ctx.shape[1]
        return self.img.finish(x, h[:, n_ctx:], mod_i), self.ctx.finish(ctx, h[:, :n_ctx], mod_c)


class MMDiT(nn.Module):
    """SD3-style MMDiT; presets shared with DiT (``DIT_PRESETS``). See module doc."""

    def __init__(self, in_channels=4, image_size=32, patch_size=2, hidden_size=None, depth=None,
                 num_heads=None, preset="T", mlp_ratio=4.0, num_classes=0, context_dim=None,
                 context_tokens=4, text=False):
        super().__init__()
        dim, depth, heads = resolve_preset(DIT_PRESETS, preset, hidden_size, depth, num_heads)
        if text and not num_classes:
            raise ValueError("text=True makes tokens of class names: give num_classes > 0")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.patch = Patchify(in_channels, image_size, patch_size, dim)
        self.cond = Conditioning("MMDiT", in_channels, image_size, dim, 0 if text else num_classes)
        self.text = TextTokens(num_classes, dim) if text else None
        self.context_proj = nn.Linear(context_dim, dim) if context_dim and not text else None
        self.ctx_tokens = None if text else nn.Parameter(torch.randn(context_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(JointBlock(dim, heads, mlp_ratio, last=i == depth - 1)
                                    for i in range(depth))
        self.final = FinalLayer(dim, patch_size * patch_size * in_channels)
        self.apply(_init_linear)

    def conditioning(self, x, t, y, context):
        """-> adaLN vector (B, D), context tokens (B, L, D), attention mask (B, L) | None."""
        if self.text is not None:
            if context is not None:
                raise ValueError("this MMDiT makes its tokens from labels (text=True); pass y")
            c = self.cond(x, t)                                    # timestep only
            if y is None:
                y = torch.full((x.shape[0],), NULL_LABEL, dtype=torch.long, device=x.device)
            tokens, pooled, mask = self.text(y)
            return c + pooled, tokens, mask
        c, label = self.cond.embed(x, t, y)
        if context is not None:
            if self.context_proj is None:
                raise ValueError("pass context_dim=... at construction to use context tokens")
            return c, self.context_proj(context), None
        base = label[:, None] if label is not None else torch.zeros_like(c)[:, None]
        return c, base + self.ctx_tokens[None], None               # (B, L, D)

    def forward(self, x, t, y=None, context=None):
        c, ctx, ctx_mask = self.conditioning(x, t, y, context)
        h = self.patch(x)                                          # (B, N, D)
        mask = None
        if ctx_mask is not None:                                   # image keys always attended
            image = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            mask = torch.cat([ctx_mask, image], dim=1)[:, None, None]   # (B, 1, 1, L+N)
        for block in self.blocks:
            h, ctx = block(h, ctx, c, mask)
        return self.patch.unpatchify(self.final(h, c))
