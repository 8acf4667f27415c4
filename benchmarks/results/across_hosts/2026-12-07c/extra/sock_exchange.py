"""Prototype: a raw-TCP exchange all-reduce for 2 ranks (no gloo rendezvous, add on arrival)."""
import os, socket, sys, threading, time
import torch, torch.distributed as dist

PIECE = int(os.environ.get("PIECE", 256 << 10))
rank = int(os.environ["RANK"]); size = int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo")
store = dist.distributed_c10d._get_default_store()
peer = 1 - rank
# own address: the interface that reaches the master
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); probe.connect((os.environ["MASTER_ADDR"], 1))
me = probe.getsockname()[0]; probe.close()
nsock = int(os.environ.get("NSOCK", 1))
def tune(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
socks = []
if rank == 0:
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind((me, 0)); ls.listen(8)
    store.set("proto_addr", f"{me}:{ls.getsockname()[1]}")
    for _ in range(nsock):
        c, _ = ls.accept(); tune(c); socks.append(c)
else:
    host, port = store.get("proto_addr").decode().split(":")
    for _ in range(nsock):
        c = socket.create_connection((host, int(port))); tune(c); socks.append(c)
sock = socks[0]

class Sender(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True); self.jobs = []; self.cv = threading.Condition(); self.sent = 0
    def post(self, mv):
        with self.cv:
            self.sent = 0; self.jobs.append(mv); self.cv.notify_all()
    def run(self):
        while True:
            with self.cv:
                while not self.jobs: self.cv.wait()
                mv = self.jobs.pop(0)
            n = len(mv); off = 0
            while off < n:
                k = min(PIECE, n - off); sock.sendall(mv[off:off + k]); off += k
                with self.cv:
                    self.sent = off; self.cv.notify_all()
sender = Sender(); sender.start()
scratch = {}

def exchange(buf):
    theirs = scratch.setdefault(buf.numel(), torch.empty_like(buf))
    mv = memoryview(buf.numpy()).cast("B"); rv = memoryview(theirs.numpy()).cast("B")
    sender.post(mv)
    n = len(rv); off = 0; es = buf.element_size()
    while off < n:
        k = min(PIECE, n - off); got = 0
        while got < k:
            r = sock.recv_into(rv[off + got:off + k], k - got)
            if r == 0: raise RuntimeError("peer closed")
            got += r
        end = off + k
        with sender.cv:
            while sender.sent < end: sender.cv.wait()
        buf[off // es:end // es].add_(theirs[off // es:end // es])
        off = end
    with sender.cv:
        while sender.sent < n: sender.cv.wait()

from ringflow.collectives import tree
from ringflow.collectives.ops import ReduceOp
import ringflow
comm = ringflow.init()
for nb in [int(x) for x in sys.argv[1].split(",")]:
    a = torch.ones(nb // 4); b = torch.ones(nb // 4); c = torch.ones(nb // 4)
    # correctness: exchange = sum
    x = torch.full((nb // 4,), float(rank + 1)); exchange(x); assert torch.all(x == 3.0), x[:4]
    runs = dict(sock=lambda: exchange(a), gloo=lambda: dist.all_reduce(b),
                rd=lambda: tree.all_reduce_rd(comm, c, ReduceOp.SUM))
    times = {k: [] for k in runs}
    for it in range(int(os.environ.get("ROUNDS", 31))):
        ks = list(runs); k0 = it % len(ks)
        for k in ks[k0:] + ks[:k0]:
            dist.barrier(); t = time.perf_counter(); runs[k](); times[k].append(time.perf_counter() - t)
    a.fill_(1); b.fill_(1); c.fill_(1)
    tt = torch.tensor([times[k] for k in runs], dtype=torch.float64); dist.all_reduce(tt, op=dist.ReduceOp.MAX)
    if rank == 0:
        med = {k: tt[i][3:].median().item() for i, k in enumerate(runs)}
        print(f"{nb>>10} KiB " + " ".join(f"{k} {v*1e3:.2f}ms ({med['gloo']/v:.2f}x)" for k, v in med.items()), flush=True)
ringflow.shutdown()
