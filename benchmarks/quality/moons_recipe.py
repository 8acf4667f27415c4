"""The moons-mlp recipe in one process, for trying changes to it cheaply (not CI).

Trains as `ringflow.train --preset moons-mlp --objective rectified_flow` does (AdamW with
beta2 0.99, linear warm-up then cosine decay, gradient clipping at 1, EMA with warm-up; the
global batch on one rank) and scores the EMA weights as issue 17 asks: 50 Euler steps, 2000
samples against 2000 fresh points, 256 projections, a median over sampling seeds. Beside it,
where the samples go wrong: the share on the upper moon and the spread across the arcs, of
20000 samples and of 20000 data points (make_moons: 0.5 and its noise, 0.05).

    python benchmarks/quality/moons_recipe.py                           # the preset: 3000 steps
    python benchmarks/quality/moons_recipe.py --steps 9000 --seeds 30   # one change at a time

Results: benchmarks/results/models.md (moons-mlp from the CLI).
"""
import argparse
import copy
import json
import math
import statistics
import time

import torch

from ringflow.data import load_dataset
from ringflow.models.metrics import sliced_wasserstein
from ringflow.models.registry import build_network, build_objective

IID_FLOOR = 0.0301      # median of 50 sets of 2000 i.i.d. data draws (quality.py cli-moons)
SAMPLERS = {"euler-50": dict(steps=50), "euler-200": dict(steps=200),
            "heun-50": dict(steps=50, method="heun")}


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--t-sampling", default="logit_normal", choices=["logit_normal", "uniform"])
    p.add_argument("--zscore", action="store_true",
                   help="train on data z-scored by its mean and std; samples are scaled back")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=50, help="sampling seeds scored")
    p.add_argument("--sampler", default="euler-50", choices=sorted(SAMPLERS),
                   help="the scored sampler (the target's is euler-50)")
    return p.parse_args()


def train(args, net, rf, x):
    """The CLI's loop on one rank -> the EMA copy."""
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = copy.deepcopy(net).requires_grad_(False)
    g = torch.Generator().manual_seed(args.seed + 1)
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if args.schedule == "cosine":
            lr *= 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = rf.loss(net, x[torch.randint(0, len(x), (args.batch,), generator=g)], None,
                       generator=g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
    return ema.eval()


def arcs_report(points):
    """(upper-moon share, std of the distance across the arcs) of points (N, 2)."""
    from sklearn.datasets import make_moons
    arc, label = make_moons(8000, noise=0.0, random_state=0)
    arc, label = torch.from_numpy(arc).float() - torch.tensor([0.5, 0.25]), torch.from_numpy(label)
    nearest = torch.cat([torch.cdist(c, arc).argmin(1) for c in points.split(2000)])
    upper = label[nearest] == 0
    centre = torch.where(upper[:, None], torch.tensor([-0.5, -0.25]), torch.tensor([0.5, 0.25]))
    across = (points - centre).norm(dim=1) - 1                       # 0 on the arc
    across = torch.where(upper, across, -across)                     # outward on both moons
    return round(upper.float().mean().item(), 4), round(across.std().item(), 4)


def main():
    args = parse()
    torch.set_num_threads(1)
    x = load_dataset("moons", n=10000, seed=0)[0]
    mean, std = (x.mean(0), x.std(0)) if args.zscore else (torch.zeros(2), torch.ones(2))
    torch.manual_seed(args.seed)
    net = build_network("mlp", in_channels=2, hidden=args.hidden, depth=args.depth)
    rf = build_objective("rectified_flow", t_sampling=args.t_sampling, label_dropout=0.0)
    start = time.time()
    ema = train(args, net, rf, (x - mean) / std)
    seconds = time.time() - start

    def sample(n, seed, sampler="euler-50"):
        return rf.sample(ema, (n, 2), generator=torch.Generator().manual_seed(seed),
                         **SAMPLERS[sampler]) * std + mean
    many = arcs_report(sample(20000, 999))
    data = arcs_report(load_dataset("moons", n=20000, seed=77)[0])
    fresh = load_dataset("moons", n=2000, seed=123)[0]
    scores = [sliced_wasserstein(sample(2000, s, args.sampler), fresh, num_projections=256)
              for s in range(1, args.seeds + 1)]
    median = statistics.median(scores)
    print(json.dumps({"args": vars(args), "train_seconds": round(seconds),
                      "sliced_w2_median": round(median, 4),
                      "sliced_w2_mean": round(statistics.mean(scores), 4),
                      "excess_over_iid_floor": round(math.sqrt(max(0, median ** 2
                                                                   - IID_FLOOR ** 2)), 4),
                      "upper_share_and_spread": {"model": many, "data": data}}), flush=True)


if __name__ == "__main__":
    main()
