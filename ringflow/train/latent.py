"""``--latent RUN_OR_CHECKPOINT``: train in the latent space of a ``--model vae`` run, as latent
diffusion does (Rombach et al. 2022, arXiv:2112.10752; SD3, Esser et al. 2024).

The data set is encoded once (each rank encodes its share, an all-gather joins them) to the
posterior means, cached on disk under a key made of the autoencoder checkpoint's sha256 (from
its MANIFEST) and the data's hash. Latents are multiplied by a scale factor 1 / std computed
from all of them (SD's scale factor, there from one batch), so the generative model sees unit
variance; the factor is written to ``OUT/latent.json`` and ``ringflow.evaluate`` reads it
there. Samples are decoded with ``decode(z / scale)`` for the PNG grids and for scoring.

    space = load_space("runs/mnist-vae")            # newest valid checkpoint of the VAE run
    z = encode_dataset(space, x, comm)              # (N, c, h, w) unit variance, every rank
    images = space.decode(z_samples)                # (B, C, H, W) in [-1, 1]
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .. import collectives as rc
from .. import settings
from . import checkpoint as ckpt
from .config import ConfigError, from_dict

LATENT_FILE = "latent.json"      # in the latent run's --out: scale factor and autoencoder


class LatentSpace:
    """A frozen autoencoder and the scale that gives its latents unit variance."""

    def __init__(self, vae, checkpoint: Path, checksum: str, scale: float | None = None):
        self.vae, self.checkpoint, self.checksum, self.scale = vae, checkpoint, checksum, scale

    @property
    def shape(self) -> tuple:
        return self.vae.latent_shape()

    @torch.no_grad()
    def encode(self, x, batch: int = 500) -> torch.Tensor:
        """Posterior means (N, c, h, w), unscaled, of images x (N, C, H, W) in [-1, 1]."""
        return torch.cat([self.vae.encode(b)[0] for b in x.split(batch)]) if len(x) else \
            torch.empty((0, *self.shape))

    @torch.no_grad()
    def decode(self, z, batch: int = 500) -> torch.Tensor:
        """Scaled latents (B, c, h, w) -> images (B, C, H, W) clamped to [-1, 1], on the CPU."""
        return torch.cat([self.vae.decode(b.float().cpu() / self.scale).clamp(-1, 1)
                          for b in z.split(batch)])


def find_autoencoder(spec: str) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a VAE run folder or one of its checkpoints."""
    path = Path(spec)
    if (path / ckpt.MANIFEST).is_file():
        folder = path
    else:
        folder = ckpt.newest_valid(path / "checkpoints", [])
        if folder is None:
            raise ConfigError(f"--latent {spec}: no valid checkpoint there; give a "
                              "ringflow.train --model vae run folder or one of its "
                              "checkpoints/step-* folders")
    run = folder.parent.parent
    if not (run / "config.json").is_file():
        raise ConfigError(f"--latent {spec}: {run} has no config.json (not a ringflow.train run)")
    return folder, run


def load_space(spec: str) -> LatentSpace:
    """The autoencoder of ``spec`` with its EMA weights, on the CPU, frozen."""
    from .build import build_data, build_network
    folder, run = find_autoencoder(spec)
    ae_cfg = from_dict(json.loads((run / "config.json").read_text()))
    if ae_cfg.model != "vae":
        raise ConfigError(f"--latent {spec}: that run trained --model {ae_cfg.model}, not an "
                          "autoencoder; train one with --preset mnist-vae first")
    x, _, _ = build_data(ae_cfg)
    vae = build_network(ae_cfg, x, 0)
    vae.load_state_dict(ckpt.read(folder, "ema.safetensors"))
    checksum = json.loads((folder / ckpt.MANIFEST).read_text())["ema.safetensors"]
    return LatentSpace(vae.eval().requires_grad_(False), folder, checksum)


def cache_path(space: LatentSpace, x) -> Path:
    data = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()[:16]
    return Path(settings.cache_dir()) / f"latents-{space.checksum[:16]}-{data}.pt"


def encode_dataset(space: LatentSpace, x, comm) -> torch.Tensor:
    """Collective: the scaled latents (N, c, h, w) of x on every rank; sets ``space.scale``."""
    path = cache_path(space, x)
    hit = torch.tensor([float(path.is_file())], device=comm.device)
    rc.broadcast(hit, src=0, group=comm)               # rank 0 decides: one answer for all
    if hit.item():
        z = torch.load(path, map_location="cpu", weights_only=True)
    else:
        z = _encode_sharded(space, x, comm)
        if comm.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(z, f"{path}.tmp")
            os.replace(f"{path}.tmp", path)           # atomic: no half-written cache
    space.scale = 1.0 / float(z.double().std())
    return z * space.scale


def _encode_sharded(space, x, comm) -> torch.Tensor:
    """Each rank encodes a contiguous share (padded to equal length); an all-gather joins."""
    per = -(-len(x) // comm.size)
    mine = space.encode(x[comm.rank * per:(comm.rank + 1) * per].cpu())
    padded = torch.zeros((per, *space.shape))
    padded[:len(mine)] = mine
    out = torch.empty((per * comm.size, *space.shape), device=comm.device)
    rc.all_gather_into_tensor(out, padded.to(comm.device).contiguous(), group=comm)
    return out[:len(x)].cpu()


def save_record(space: LatentSpace, out: Path) -> None:
    """OUT/latent.json: what ringflow.evaluate needs to decode this run's samples."""
    record = {"autoencoder": str(space.checkpoint), "sha256": space.checksum,
              "scale": space.scale, "latent_shape": list(space.shape)}
    out.mkdir(parents=True, exist_ok=True)
    (out / LATENT_FILE).write_text(json.dumps(record, indent=1) + "\n")


def load_for_run(run: Path, spec: str) -> LatentSpace:
    """The latent space of a finished latent run, its scale read from OUT/latent.json."""
    space = load_space(spec)
    record = json.loads((run / LATENT_FILE).read_text())
    if record["sha256"] != space.checksum:
        raise ConfigError(f"{run}: trained on the latents of autoencoder weights {record['sha256'][:12]}"
                          f", but {spec} now holds {space.checksum[:12]}; point it back at "
                          f"{record['autoencoder']}")
    space.scale = record["scale"]
    return space
