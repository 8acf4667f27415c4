import sys, time, torch, torch.distributed as dist
import ringflow
from ringflow import collectives as rc
from ringflow.collectives import tree, ring
from ringflow.collectives.ops import ReduceOp
comm = ringflow.init()
nb = int(sys.argv[1])
buf = torch.ones(nb // 4)
runs = dict(rd=lambda: tree.all_reduce_rd(comm, buf, ReduceOp.SUM),
            pair=lambda: ring.all_reduce(comm, buf, ReduceOp.SUM),
            verb_auto=lambda: rc.all_reduce(buf),
            verb_rd=lambda: rc.all_reduce(buf, algorithm="rd"),
            builtin=lambda: dist.all_reduce(buf))
times = {k: [] for k in runs}
for it in range(33):
    ks = list(runs); k0 = it % len(ks)
    for k in ks[k0:] + ks[:k0]:
        buf.fill_(1); dist.barrier(); t = time.perf_counter(); runs[k](); times[k].append(time.perf_counter() - t)
if comm.rank == 0:
    from ringflow.collectives import select
    print("auto picked", select.last)
    for k, v in times.items():
        v = sorted(v[3:]); n = len(v)
        print(f"{nb>>10} KiB {k:9s} p10 {v[n//10]*1e3:6.2f} med {v[n//2]*1e3:6.2f} p90 {v[9*n//10]*1e3:6.2f} ms")
ringflow.shutdown()
