import sys, time, threading, torch, torch.distributed as dist
import ringflow
from ringflow import collectives as rc
comm = ringflow.init()
nb = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
buf = torch.ones(nb // 4)
raw_theirs = torch.empty_like(buf)
def raw():
    peer = 1 - comm.rank
    r = dist.irecv(raw_theirs, peer); s = dist.isend(buf, peer); r.wait(); s.wait(); buf.add_(raw_theirs)
runs = dict(ring=lambda: rc.all_reduce(buf, algorithm="ring"), raw=raw, builtin=lambda: dist.all_reduce(buf))
times = {k: [] for k in runs}
for it in range(120):
    ks = list(runs); k0 = it % len(ks)
    for k in ks[k0:] + ks[:k0]:
        dist.barrier(); t = time.perf_counter(); runs[k](); times[k].append(time.perf_counter() - t)
if comm.rank == 0:
    print("threads:", [t.name for t in threading.enumerate()])
    for k, v in times.items():
        v = sorted(v[5:]); n = len(v)
        print(k, " ".join(f"{v[int(q*(n-1))]*1e3:.2f}" for q in (0, .1, .25, .5, .75, .9, 1)))
ringflow.shutdown()
