"""FullyShardedDataParallel on CUDA as a world of one (NCCL): the code path, not a speed claim.

1. Correctness: DiT-S/2 on 32x32x4 latents, fp32, 3 AdamW steps wrapped and bare on the same
   batches; the gathered parameters must match the bare model's (max relative difference).
2. DiT-XL/2 (675M parameters) on 32x32x4 latents, batch 8, bf16 compute and all-gathers with
   fp32 master shards and gradient reduction (``mixed_precision=torch.bfloat16``), AdamW: step
   time after warm-up, peak CUDA memory, the loss finite, and the full state dict gathered
   back (fp32, every name).

    python tests/gpu/fsdp_xl.py --out benchmarks/results/gpu_fsdp_xl.json

Without a CUDA device it prints why and exits 0 having run nothing ("fsdp_xl: skipped");
``--cpu-dry-run`` runs both parts on the CPU with DiT-T in place of S and XL (checks the script).
"""
import argparse
import json
import sys
import time

import torch

TOL = 1e-4                      # cuBLAS may pick other kernels for the two models' shapes


def dit(preset: str, seed: int) -> torch.nn.Module:
    from ringflow.models import build_network
    torch.manual_seed(seed)
    return build_network(f"dit-{preset.lower()}", in_channels=4, image_size=32,
                         num_classes=1000, patch_size=2)


def batches(n: int, batch: int, dev: str):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 4, 32, 32, generator=g).to(dev),
             torch.randint(0, 1000, (batch,), generator=g).to(dev)) for _ in range(n)]


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def train(model, opt, data, rf) -> list[float]:
    losses = []
    for i, (x, y) in enumerate(data):
        torch.manual_seed(100 + i)               # the same noise and times for both models
        loss = rf.loss(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def correctness(rf, dev: str, preset: str) -> dict:
    from ringflow.parallel import FullyShardedDataParallel
    data = batches(3, 8, dev)
    bare = dit(preset, 0).to(dev)
    wrapped = FullyShardedDataParallel(dit(preset, 0).to(dev))
    train(bare, torch.optim.AdamW(bare.parameters(), lr=1e-4), data, rf)
    train(wrapped, torch.optim.AdamW(wrapped.parameters(), lr=1e-4), data, rf)
    sd, ref = wrapped.state_dict(), bare.state_dict()
    diff = max(((sd[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)).item()
               for k, v in ref.items() if v.is_floating_point())
    return {"model": f"DiT-{preset}/2 fp32, 3 steps", "max_rel_diff": diff, "ok": diff <= TOL}


def xl_steps(rf, steps: int, dev: str, preset: str) -> dict:
    from ringflow.parallel import FullyShardedDataParallel
    net = dit(preset, 0).to(dev)
    params = sum(p.numel() for p in net.parameters())
    model = FullyShardedDataParallel(net, mixed_precision=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev == "cuda")
    data = batches(1, 8, dev) * (steps + 2)
    train(model, opt, data[:2], rf)                 # warm-up: allocations, AdamW state
    sync(dev)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = train(model, opt, data[2:], rf)
    sync(dev)
    step_s = (time.perf_counter() - t0) / steps
    sd = model.state_dict()
    complete = all(sd[n].dtype == torch.float32 and sd[n].shape == p.shape
                   for n, p in dit(preset, 0).named_parameters())
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
    return {"model": f"DiT-{preset}/2, 32x32x4, batch 8, bf16 compute, fp32 master",
            "params_M": round(params / 1e6, 1), "step_s": round(step_s, 3),
            "peak_GiB": None if peak is None else round(peak, 2),
            "losses": [round(v, 4) for v in losses],
            "ok": all(v == v and abs(v) < 1e3 for v in losses) and complete}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu_fsdp_xl.json")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--cpu-dry-run", action="store_true", help="DiT-T on the CPU, world of one")
    args = p.parse_args()
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print("fsdp_xl: skipped: no CUDA device visible (run it on a GPU machine)")
        return 0
    import ringflow
    from ringflow.models import build_objective
    dev = "cpu" if args.cpu_dry_run else "cuda"
    small, large = ("T", "T") if args.cpu_dry_run else ("S", "XL")
    if dev == "cuda":
        ringflow.init(transport="torch", device="cuda:0", timeout=60)
    else:
        ringflow.init()
    rf = build_objective("rectified_flow")
    report = {"torch": torch.__version__,
              "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (dry run)"}
    for name, fn in (("correctness", lambda: correctness(rf, dev, small)),
                     ("dit_xl", lambda: xl_steps(rf, args.steps, dev, large))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - the report says which part failed
            report[name] = {"error": f"{type(e).__name__}: {e}", "ok": False}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report[name]), flush=True)
    ringflow.shutdown()
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    ok = all(report[k]["ok"] for k in ("correctness", "dit_xl"))
    print("fsdp_xl: ok" if ok else "fsdp_xl: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
