"""GPU smoke test, the part in Python (tests/gpu/smoke.sh runs it; at most a few minutes).

1. NCCL: ringflow.init(transport="torch") as a world of one on CUDA, then every collective
   verb on CUDA tensors, checked against the expected values.
2. The ring on CUDA: 4 thread-ranks (local transport) run all-reduce, reduce-scatter and
   all-gather on CUDA tensors, checked against a sum on one device.
3. Data parallel on CUDA: 2 thread-ranks train an MLP with ZeroOptimizer stage 2, checked
   against one full-batch model; DataParallel (bucket hooks on autograd's CUDA thread, the
   all-reduce on the comm thread) trains the same MLP in the NCCL world of one, checked against
   the bare model. DataParallel cannot run as thread-ranks on one GPU: every thread's backward
   runs on autograd's one CUDA thread, so the first rank to wait for its buckets at the end of
   backward blocks the other rank's backward (torch DDP waits there too).
4. bf16 all-reduce with fp32 accumulation on CUDA (4 thread-ranks) against an fp32 sum.
5. DiT training throughput: DiT-B/2 on 32x32x4 latents (DiT's 256 px setting), batch 64, bf16
   autocast, fused AdamW; images/s after warm-up and model FLOP utilisation (FLOPs counted by
   torch's FlopCounterMode for one forward+backward, peak from the device name).

    python tests/gpu/smoke.py --out benchmarks/results/gpu_smoke.json
"""
import argparse
import json
import time

import torch

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
             "L4": 121e12, "4090": 165e12}          # dense bf16 tensor-core FLOP/s


def nccl_world_of_one() -> dict:
    import ringflow
    from ringflow import collectives as rc
    t0 = time.perf_counter()
    comm = ringflow.init(transport="torch", device="cuda:0", timeout=60)
    backend = comm.transport.backend
    init_s = time.perf_counter() - t0
    x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    rc.all_reduce(x)
    out = torch.empty_like(x)
    rc.reduce_scatter_tensor(out, x)
    gathered = torch.empty_like(x)
    rc.all_gather_into_tensor(gathered, out)
    rc.broadcast(gathered, src=0)
    rc.barrier()
    torch.cuda.synchronize()
    ok = torch.equal(gathered, torch.arange(1 << 20, dtype=torch.float32, device="cuda"))
    dp_err = data_parallel_world_of_one()
    ringflow.shutdown()
    return {"backend": backend, "init_s": round(init_s, 2), "collectives_ok": bool(ok),
            "data_parallel_max_abs_weight_err": dp_err, "data_parallel_ok": dp_err < 1e-5}


def data_parallel_world_of_one(device: str = "cuda", steps: int = 3) -> float:
    """DataParallel (default group, small buckets) against the bare model: the same weights."""
    from ringflow.parallel import DataParallel
    torch.manual_seed(0)
    bare = _mlp(None, device)
    dp = DataParallel(_mlp(bare.state_dict(), device), bucket_cap_mb=1, first_bucket_mb=0.25)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (bare, dp)]
    for _ in range(steps):
        x, t = torch.randn(64, 1024, device=device), torch.randn(64, 1, device=device)
        for m, opt in zip((bare, dp), opts):
            torch.nn.functional.mse_loss(m(x), t).backward()
            opt.step()
            opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return max((a - b).abs().max().item() for a, b in zip(bare.parameters(), dp.parameters()))


def ring_on_cuda(ranks: int = 4, numel: int = 1 << 22) -> dict:
    from ringflow import collectives as rc
    from ringflow.collectives.threads import run_ranks
    inputs = [torch.randn(numel, device="cuda", generator=torch.Generator("cuda").manual_seed(r))
              for r in range(ranks)]
    expected = torch.stack(inputs).sum(0)

    def body(comm):
        t = inputs[comm.rank].clone()
        rc.all_reduce(t, group=comm, algorithm="ring")
        part = torch.empty(numel // ranks, device="cuda")
        rc.reduce_scatter_tensor(part, inputs[comm.rank].clone(), group=comm)
        whole = torch.empty(numel, device="cuda")
        rc.all_gather_into_tensor(whole, part, group=comm)
        torch.cuda.synchronize()
        return t, whole

    results = run_ranks(ranks, body, timeout=60)
    err = max((t - expected).abs().max().item() for t, _ in results)
    same = all(torch.equal(results[0][0], t) and torch.equal(results[0][1], w) for t, w in results)
    return {"ranks": ranks, "numel": numel, "max_abs_err": err, "bitwise_equal_ranks": same}


def _mlp(state: dict | None, device: str) -> torch.nn.Module:
    """7 linear layers of 1024; ``state`` from the main thread (threads share torch's RNG)."""
    layers = []
    for _ in range(6):
        layers += [torch.nn.Linear(1024, 1024), torch.nn.GELU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(1024, 1)).to(device)
    if state is not None:
        net.load_state_dict(state)
    return net


def zero_on(device: str = "cuda", ranks: int = 2, rows: int = 64, steps: int = 3) -> dict:
    """ZeroOptimizer stage 2 over thread-ranks on ``device`` against one full-batch model."""
    from ringflow.collectives.threads import run_ranks
    from ringflow.parallel import ZeroOptimizer
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(ranks * rows, 1024, generator=g).to(device) for _ in range(steps)]
    ts = [torch.randn(ranks * rows, 1, generator=g).to(device) for _ in range(steps)]
    torch.manual_seed(0)
    ref = _mlp(None, device)
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    for x, t in zip(xs, ts):
        torch.nn.functional.mse_loss(ref(x), t).backward()
        ref_opt.step()
        ref_opt.zero_grad()

    def body(comm):
        sl = slice(comm.rank * rows, (comm.rank + 1) * rows)
        net = _mlp(init, device)
        zero = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, stage=2, lr=1e-3)
        for x, t in zip(xs, ts):
            torch.nn.functional.mse_loss(net(x[sl]), t[sl]).backward()
            zero.step()
            zero.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        return max((a - b).abs().max().item() for a, b in zip(net.parameters(), ref.parameters()))

    errs = run_ranks(ranks, body, timeout=120)
    return {"ranks": ranks, "max_abs_weight_err": max(errs), "ok": max(errs) < 1e-4}


def bf16_fp32acc_on(device: str = "cuda", ranks: int = 4, numel: int = 1 << 20) -> dict:
    """bf16 all-reduce accumulating in fp32: one rounding, so it equals the fp32 sum rounded."""
    from ringflow import collectives as rc
    from ringflow.collectives.threads import run_ranks
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(numel, generator=g).to(torch.bfloat16).to(device) for _ in range(ranks)]
    exact = torch.stack([t.float() for t in inputs]).sum(0).to(torch.bfloat16)

    def body(comm):
        t = inputs[comm.rank].clone()
        rc.all_reduce(t, group=comm, algorithm="fp32acc")
        ring = inputs[comm.rank].clone()
        rc.all_reduce(ring, group=comm, algorithm="ring")
        if device == "cuda":
            torch.cuda.synchronize()
        return t, ring

    results = run_ranks(ranks, body, timeout=60)
    exact_f = exact.float()
    return {"ranks": ranks, "numel": numel,
            "fp32acc_equals_rounded_sum": all(torch.equal(t, exact) for t, _ in results),
            "ring_bf16_max_abs_err": max((r.float() - exact_f).abs().max().item() for _, r in results),
            "fp32acc_max_abs_err": max((t.float() - exact_f).abs().max().item() for t, _ in results)}


def dit_throughput(seconds: float = 40.0, batch: int = 64) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    from ringflow.models import build_network, build_objective
    net = build_network("dit-b", in_channels=4, image_size=32, num_classes=1000,
                        patch_size=2).cuda()
    rf = build_objective("rectified_flow")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 4, 32, 32, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = rf.loss(net, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    achieved = flops_per_step * n / elapsed
    return {"model": "DiT-B/2, 32x32x4, bf16 autocast", "batch": batch, "steps": n,
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "img_per_s": round(batch * n / elapsed, 1), "tflops": round(achieved / 1e12, 1),
            "mfu": None if peak is None else round(achieved / peak, 3), "device": name}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu_smoke.json")
    p.add_argument("--seconds", type=float, default=40.0)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: no CUDA device visible; run it on a GPU machine")
    report = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name()}
    for name, fn in (("nccl_world_of_one", nccl_world_of_one), ("ring_on_cuda", ring_on_cuda),
                     ("zero2_on_cuda", zero_on),
                     ("bf16_fp32acc_on_cuda", bf16_fp32acc_on),
                     ("dit_throughput", lambda: dit_throughput(args.seconds))):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failing part must not hide the others
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report[name]), flush=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    raise SystemExit(f"gpu_smoke: failed parts: {failed}" if failed else 0)


if __name__ == "__main__":
    main()
