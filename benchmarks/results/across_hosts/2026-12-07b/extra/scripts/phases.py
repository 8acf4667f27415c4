import sys, time, statistics, datetime, torch, torch.distributed as dist
import ringflow
from ringflow.collectives import tree
from ringflow.collectives.ops import ReduceOp
comm = ringflow.init(); peer = 1 - comm.rank
buf = torch.ones(1 << 18); theirs = torch.empty_like(buf); pc = time.perf_counter
td = datetime.timedelta(seconds=300)
def raw(rf):
    t0 = pc()
    if rf:
        s, r = comm.sendrecv(buf, peer, theirs, peer)
    else:
        r, s = dist.irecv(theirs, peer), dist.isend(buf, peer)
    t1 = pc()
    if rf: comm.wait(r, peer); 
    else: r.wait()
    t2 = pc()
    if rf: comm.wait(s, peer)
    else: s.wait()
    t3 = pc()
    torch.add(theirs, buf, out=buf) if comm.rank else torch.add(buf, theirs, out=buf)
    t4 = pc()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0
times = {0: [], 1: []}
for it in range(83):
    for rf in (0, 1):
        buf.fill_(1); dist.barrier(); times[rf].append(raw(rf))
if comm.rank == 0:
    for rf, v in times.items():
        cols = list(zip(*v[3:]))
        print("ringflow" if rf else "raw     ", " ".join(f"{statistics.median(c)*1e3:6.3f}" for c in cols), "ms (post, recv, send, add, total)")
ringflow.shutdown()
