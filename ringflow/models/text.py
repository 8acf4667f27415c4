"""Class names as short token sequences: MMDiT's second stream (SD3, Esser et al. 2024, sec. 5.2).

SD3 conditions on a sequence of text-encoder states plus a pooled text vector. With no text
encoder here, each class id becomes a prompt ("digit 7"), split into characters, each character
a learned embedding plus a learned position: a (B, L, dim) token sequence. The pooled vector is
an MLP over all L tokens side by side (it feeds adaLN beside the timestep); a mean over the
tokens learned classes slower, as "digit " is the same in every prompt and only the last
character tells them apart.

A dropped label (``NULL_LABEL``) drops the whole stream: its tokens are masked out of the joint
attention (its ``mask`` row is False) and its pooled vector is a learned null vector, so the
unconditional half of classifier-free guidance sees no text at all.

    enc = TextTokens(num_classes=10, dim=64)
    tokens, pooled, mask = enc(torch.tensor([7, -1]))   # (2, 7, 64), (2, 64), (2, 7) bool
    enc.prompts[7]                                      # 'digit 7'
"""
import torch
from torch import nn

from ringflow.models.embeddings import NULL_LABEL

ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789"   # character id = index + 1; 0 pads


def class_prompts(num_classes):
    """Prompt per class id: "digit 0", "digit 1", ..."""
    return [f"digit {k}" for k in range(num_classes)]


def tokenize(prompts, length=None):
    """Prompts -> character ids (P, L), 0-padded to the longest prompt (or ``length``)."""
    bad = sorted({ch for p in prompts for ch in p.lower() if ch not in ALPHABET})
    if bad:
        raise ValueError(f"prompts may use only {ALPHABET!r}; got {bad}")
    length = length or max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor([ALPHABET.index(ch) + 1 for ch in prompt.lower()])
    return ids


class TextTokens(nn.Module):
    """y (B,) class ids or NULL_LABEL -> tokens (B, L, dim), pooled (B, dim), mask (B, L).

    ``mask`` is True where a token may be attended to: a real character of a kept prompt.
    """

    def __init__(self, num_classes, dim, prompts=None):
        super().__init__()
        self.prompts = prompts or class_prompts(num_classes)
        if len(self.prompts) != num_classes:
            raise ValueError(f"{len(self.prompts)} prompts for {num_classes} classes")
        self.register_buffer("ids", tokenize(self.prompts), persistent=False)   # (classes, L)
        self.chars = nn.Embedding(len(ALPHABET) + 1, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(self.ids.shape[1], dim) * 0.02)
        self.pool = nn.Sequential(nn.Linear(self.ids.shape[1] * dim, dim), nn.SiLU(),
                                  nn.Linear(dim, dim))
        self.null_pooled = nn.Parameter(torch.zeros(dim))

    def forward(self, y):
        if y.dtype != torch.long or y.dim() != 1:
            raise ValueError(f"labels must be a LongTensor (B,), got {y.dtype} {tuple(y.shape)}")
        if (y >= len(self.prompts)).any() or (y < NULL_LABEL).any():
            raise ValueError(f"labels must be in [0, {len(self.prompts)}) or {NULL_LABEL} "
                             f"(null); got range [{int(y.min())}, {int(y.max())}]")
        keep = y != NULL_LABEL
        ids = self.ids[y.clamp(min=0)]                                  # (B, L)
        tokens = self.chars(ids) + self.pos                             # (B, L, dim)
        real = (ids > 0).unsqueeze(-1).to(tokens.dtype)                 # padding pools as 0
        pooled = self.pool((tokens * real).flatten(1))                  # (B, L * dim) -> (B, dim)
        pooled = torch.where(keep[:, None], pooled, self.null_pooled.to(pooled.dtype))
        return tokens, pooled, keep[:, None] & (ids > 0)
