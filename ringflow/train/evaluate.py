"""``python -m ringflow.evaluate RUN``: sample from a run's newest checkpoint on every rank and
score the samples; writes ``RUN/eval.json`` and ``RUN/samples/eval.png``.

    python -m ringflow.evaluate runs/digits-dit --num-samples 1000
    torchrun --nproc_per_node=2 -m ringflow.evaluate runs/digits-dit      # sharded over ranks

Sampling (and the likelihood, when asked) is sharded: each rank draws its share and the
shares meet in one all-gather (or all-reduce). Scoring the gathered samples (``ringflow.models
.metrics``) runs on rank 0 after the last collective, so no rank waits inside one meanwhile:
- images with labels: Frechet and kernel distances in the features of a small classifier
  trained on the dataset, and the share of samples classified as the class they were asked for;
- 2D points: sliced Wasserstein distance to the data;
- ``--nll-examples M``: bits/dim (images) or nats (points) of M training examples;
- an autoencoder (``--model vae``): also PSNR of the reconstructions of the first
  ``--num-samples`` images and their Frechet distance to the data (``recon_psnr``, ``recon_fd``).
A ``--latent`` run's samples are decoded by its autoencoder before scoring, a ``--standardize``
run's scaled back to the data's coordinates.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import torch

from .. import collectives as rc
from .. import runtime
from ..data import LEVELS
from ..launch import read_launch_env
from . import checkpoint as ckpt
from . import checks, config, latent, plots
from .build import build_autocast, build_data, build_network, build_objective, start
from .generate import grid_labels, sample_seed, sample_sharded
from .standardize import Standardized


def build_parser() -> argparse.ArgumentParser:
    # the module doc's first paragraph, after its "python -m ringflow.evaluate RUN: ", is the
    # description (its first line alone stops mid-sentence); its command lines the examples
    paragraphs = [part.replace("``", "") for part in __doc__.split("\n\n")]
    what = " ".join(paragraphs[0].split()).split(": ", 1)[1]
    p = argparse.ArgumentParser(prog="ringflow.evaluate",
                                description=textwrap.fill(what[0].upper() + what[1:], 79),
                                epilog="examples:\n" + paragraphs[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder written by ringflow.train")
    p.add_argument("--num-samples", type=int, default=1000, help="samples to score")
    p.add_argument("--sample-steps", type=int, help="sampler steps (default: the run's)")
    p.add_argument("--cfg-scale", type=float, help="guidance scale (default: the run's)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--nll-examples", type=int, default=0,
                   help="training examples whose likelihood to average (0: skip)")
    p.add_argument("--classifier-epochs", type=int, default=30,
                   help="epochs of the feature classifier (cached on disk)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed")
    p.add_argument("--sample-noise", choices=["iid", "sobol"],
                   help="the sampler's starting noise (default: the run's; sobol: evenly spread)")
    p.add_argument("--out", help="JSON path (default: RUN/eval.json)")
    return p


def load_weights(run: Path, comm, net, which: str) -> Path:
    rejected = []                                     # why, on rank 0 (the one that prints)
    found = ckpt.find_latest(run / "checkpoints", comm, rejected)
    why = "".join(f"\n  rejected {r}" for r in rejected)
    if found is None:
        raise ckpt.CheckpointError(f"{run / 'checkpoints'} holds no valid checkpoint{why}")
    if why:
        print(f"ringflow.evaluate: newer checkpoints are invalid, using {found.name}{why}",
              file=sys.stderr)
    net.load_state_dict(ckpt.read(found, f"{which}.safetensors"))
    return found


@torch.no_grad()
def sharded_nll(objective, net, x, comm, device, data_name: str, seed: int) -> dict:
    """Collective: mean negative log-likelihood of ``x`` with each rank scoring its share."""
    mine = x[comm.rank::comm.size].to(device)
    gen = torch.Generator(device=device).manual_seed(sample_seed(seed, comm.rank))
    levels = LEVELS.get(data_name) if x.dim() == 4 else None
    if levels:
        from ..models import bits_per_dim, dequantize
        logp = objective.log_likelihood(net, dequantize(mine, levels, gen))
        values = bits_per_dim(logp, x[0].numel(), levels)
    else:
        values = -objective.log_likelihood(net, mine)
    total = torch.tensor([values.double().sum().item(), float(len(mine))], dtype=torch.float64,
                         device=comm.device)
    rc.all_reduce(total, group=comm)
    return {"bits_per_dim" if levels else "nll_nats": total[0].item() / total[1].item()}


def score(samples, x, y, args, num_classes: int) -> dict:
    """Rank 0: quality metrics of the gathered samples against the data."""
    from ..models import metrics
    if samples.dim() == 2:
        return {"sliced_w2": metrics.sliced_wasserstein(samples, x)}
    if y is None:
        return {}
    clf = metrics.train_classifier(x, y, epochs=args.classifier_epochs)
    labels = grid_labels(len(samples), num_classes)
    out = metrics.image_metrics(clf, samples, x, sample_labels=labels)
    out["classifier_val_accuracy"] = float(clf.val_accuracy)
    return out


def reconstruction(objective, net, data_name: str, count: int, args) -> dict:
    """Rank 0: PSNR and classifier FD of an autoencoder's reconstructions of ``count`` images."""
    from ..data import load_dataset
    from ..models import metrics, psnr
    x, y = load_dataset(data_name)
    real = x[:count]
    recon = torch.cat([objective.reconstruct(net.cpu(), b) for b in real.split(500)]).clamp(-1, 1)
    out = {"recon_psnr": psnr(recon, real).mean().item()}
    if y is not None:
        clf = metrics.train_classifier(x, y, epochs=args.classifier_epochs)
        out["recon_fd"] = metrics.image_metrics(clf, recon, x)["fd"]
    return out


def save_picture(samples, x, num_classes: int, path: Path, count: int = 100) -> None:
    """About ``count`` samples as a PNG: points beside the data; class-conditional images one
    class a row (the first samples asked for each class), labelled; others the first ones."""
    labels = grid_labels(len(samples), num_classes)
    if samples.dim() == 2:
        plots.save_samples(samples, path, reference=x)
    elif labels is None:
        plots.save_samples(samples[:count], path)
    else:
        per = max(1, count // num_classes)
        idx = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in range(num_classes)])
        plots.save_samples(samples[idx], path, nrow=per, labels=labels[idx])


def evaluate(args) -> dict | None:
    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise config.ConfigError(f"{run} has no config.json: is it a ringflow.train --out folder?")
    cfg = config.from_dict(json.loads((run / "config.json").read_text()))
    noise = args.sample_noise or cfg.sample_noise
    checks.check_sample_noise(cfg.objective, noise)
    x, y, num_classes = build_data(cfg)
    space = latent.load_for_run(run, cfg.latent) if cfg.latent else None
    if cfg.standardize:
        space = Standardized.of(x)
        if args.nll_examples:
            raise config.ConfigError("--nll-examples: the likelihood of a --standardize run is "
                                     "of z-scored data; it is not reported (use 0)")
    shape = tuple(x.shape[1:]) if space is None else space.shape
    net = build_network(cfg, torch.empty((1, *shape)), num_classes)
    objective = build_objective(cfg)
    comm, device = start(cfg, read_launch_env())
    try:
        found = load_weights(run, comm, net, args.weights)
        net.to(device).eval()
        samples = sample_sharded(objective, net, args.num_samples, shape, comm,
                                 steps=args.sample_steps or cfg.sample_steps,
                                 cfg_scale=args.cfg_scale or cfg.cfg_scale,
                                 num_classes=num_classes, seed=args.seed, device=device,
                                 autocast=build_autocast(cfg, device)(), noise=noise)
        result = {"run": str(run), "checkpoint": found.name, "weights": args.weights,
                  "num_samples": args.num_samples, "sample_noise": noise,
                  "world_size": comm.size}
        if args.nll_examples:
            result.update(sharded_nll(objective, net, x[:args.nll_examples], comm, device,
                                      cfg.data, args.seed))
        rank = comm.rank
    finally:
        runtime.shutdown()
    if rank != 0:
        return None
    samples = space.decode(samples) if space is not None else samples
    if cfg.model == "vae":
        result.update(reconstruction(objective, net, cfg.data, args.num_samples, args))
    result.update(score(samples, x, y, args, num_classes))
    save_picture(samples, x, num_classes, run / "samples" / "eval.png")
    Path(args.out or run / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args)
    except (config.ConfigError, ckpt.CheckpointError) as e:
        print(f"ringflow.evaluate: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
