"""Receives from any source on the shared-memory transport (ranks as threads, 8 KiB rings):
every message is taken exactly once, each sender's in order, and a named receive posted first
keeps its message."""
from __future__ import annotations

import time

import pytest
import torch

from ringflow.transport.base import PeerTimeout, TransportError
from tests.collectives.test_shm_ring import group, in_threads  # noqa: F401 - the fixture

BIG = 5000          # 20 KB: streams through an 8 KiB ring in pieces


def _msg(sender: int, index: int, numel: int) -> torch.Tensor:
    return torch.full((numel,), float(sender * 1000 + index))


@pytest.mark.parametrize("numel", [3, BIG])
def test_many_senders_every_message_once_each_sender_in_order(group, numel):
    trs = group(4)
    per = 5

    def sender(r):
        works = [trs[r].isend(_msg(r, i, numel), 0, tag=7) for i in range(per)]
        for w in works:
            w.wait(10)

    def receiver():
        got = []
        for _ in range(3 * per):
            t = torch.empty(numel)
            w = trs[0].irecv_any(t, tag=7)
            w.wait(10)
            assert t.eq(t[0]).all() and int(t[0]) // 1000 == w.peer, (w.peer, t[0])
            got.append((w.peer, int(t[0]) % 1000))
        return got

    got = in_threads([receiver] + [lambda r=r: sender(r) for r in (1, 2, 3)])[0]
    assert sorted(got) == [(s, i) for s in (1, 2, 3) for i in range(per)]
    for s in (1, 2, 3):                          # MPI's non-overtaking rule, per sender
        assert [i for p, i in got if p == s] == list(range(per))


def test_a_named_receive_posted_first_keeps_its_message(group):
    a, b, c = group(3)
    named, any1, any2 = torch.empty(BIG), torch.empty(BIG), torch.empty(BIG)
    works = [a.irecv(named, 1, tag=0), a.irecv_any(any1, tag=0), a.irecv_any(any2, tag=0)]
    in_threads([lambda: [w.wait(10) for w in works],
                lambda: [w.wait(10) for w in (b.isend(_msg(1, 0, BIG), 0),
                                              b.isend(_msg(1, 1, BIG), 0))],
                lambda: c.isend(_msg(2, 0, BIG), 0).wait(10)])
    assert named[0] == 1000                               # rank 1's first message
    assert sorted([(works[1].peer, int(any1[0])), (works[2].peer, int(any2[0]))]) == \
        [(1, 1001), (2, 2000)]


def test_a_message_drained_early_goes_to_a_later_any_source_receive(group):
    a, b = group(2)
    other = a.irecv(torch.empty(2), 1, tag=9)             # waiting behind tag 3's message
    b.isend(_msg(1, 5, 4), 0, tag=3).wait(10)
    b.isend(_msg(1, 6, 2), 0, tag=9).wait(10)
    other.wait(10)                                        # tag 3's message was drained on the way
    t = torch.empty(4)
    w = a.irecv_any(t, tag=3)
    w.wait(10)
    assert w.peer == 1 and torch.equal(t, _msg(1, 5, 4))


def test_any_source_wait_times_out_and_fails_once_every_peer_closed(group):
    a, b, c = group(3)
    with pytest.raises(PeerTimeout, match="any rank"):
        a.irecv_any(torch.empty(2)).wait(0.3)
    w = a.irecv_any(torch.empty(2), tag=1)
    b.close()
    with pytest.raises(PeerTimeout):                      # rank 2 could still send
        w.wait(0.5)
    c.close()
    start = time.monotonic()
    with pytest.raises(TransportError, match="peer rank 1 closed .* peer rank 2 closed"):
        w.wait(20)
    assert time.monotonic() - start < 2


def test_wrong_size_fails_the_receive_naming_the_sender(group):
    a, b = group(2)
    w = a.irecv_any(torch.empty(3))
    b.isend(torch.ones(5), 0).wait(10)
    with pytest.raises(TransportError, match="from rank 1 has 5"):
        w.wait(10)


def test_a_group_of_one_refuses_an_any_source_receive_on_every_transport(group):
    """Refused by the Communicator before any transport: a world of one (the threads transport
    has no any-source receive at all) and a sub-group of one rank of a larger shm world."""
    from ringflow.collectives.communicator import Communicator
    from ringflow.transport.local import LocalTransport
    with pytest.raises(ValueError, match="needs another rank; this group has one"):
        Communicator(LocalTransport.group(1)[0], timeout=5.0).irecv_any(torch.empty(2))
    a, _ = group(2)
    alone = Communicator(a, timeout=5.0).subgroup([0])
    with pytest.raises(ValueError, match="needs another rank; this group has one"):
        alone.irecv_any(torch.empty(2))
