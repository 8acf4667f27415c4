import sys, time, torch, torch.distributed as dist
import ringflow
from ringflow import collectives as rc
from ringflow.collectives import ring, tree
from ringflow.collectives.ops import ReduceOp
comm = ringflow.init()
for nb in [int(x) for x in sys.argv[1].split(",")]:
    buf = torch.ones(nb // 4)
    runs = dict(rd_direct=lambda: tree.all_reduce_rd(comm, buf, ReduceOp.SUM),
                rd_verb=lambda: rc.all_reduce(buf, algorithm="rd"),
                auto_verb=lambda: rc.all_reduce(buf),
                builtin=lambda: dist.all_reduce(buf))
    times = {k: [] for k in runs}
    for it in range(43):
        ks = list(runs); k0 = it % len(ks)
        for k in ks[k0:] + ks[:k0]:
            dist.barrier(); t = time.perf_counter(); runs[k](); times[k].append(time.perf_counter() - t)
    if comm.rank == 0:
        for k, v in times.items():
            v = sorted(v[3:]); n = len(v)
            print(f"{nb>>10} KiB {k:9s} p10 {v[n//10]*1e3:6.2f} med {v[n//2]*1e3:6.2f} p90 {v[9*n//10]*1e3:6.2f} ms", flush=True)
ringflow.shutdown()
