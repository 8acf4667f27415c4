"""The MPI transport's numpy views of small tensors (transport/mpi.py, _Views): kept per address,
size, dtype and kind, so a hit is always a view of the bytes the caller's tensor holds now."""
import numpy as np
import torch

from ringflow.transport import mpi


def test_a_kept_view_is_the_tensors_own_memory_and_sees_its_writes():
    views, t = mpi._Views(), torch.zeros(256)
    a = views.get(t, mpi._as_numpy)
    assert views.get(t, mpi._as_numpy) is a                 # the same view, kept
    t[3] = 5.0
    a[7] = 2.0                                              # MPI writes through it
    assert a[3] == 5.0 and t[7] == 2.0 and a.dtype == np.float32 and a.shape == (256,)
    b = views.get(t, mpi._as_bytes)                         # bytes: a view of its own
    assert b is not a and b.dtype == np.uint8 and b.size == 1024


def test_views_are_keyed_by_what_the_caller_passes_not_by_the_tensor_object():
    views, t = mpi._Views(), torch.arange(512, dtype=torch.float32)
    whole = views.get(t, mpi._as_numpy)
    assert views.get(t[:512], mpi._as_numpy) is whole       # a new view object, same bytes
    half = views.get(t[256:], mpi._as_numpy)                # another address: its own view
    assert half.size == 256 and half[0] == 256.0
    assert views.get(t.view(torch.int32), mpi._as_numpy).dtype == np.int32
    square = torch.arange(16, dtype=torch.float32).view(4, 4)
    assert list(views.get(square, mpi._as_numpy)[:5]) == [0, 1, 2, 3, 4]   # flat, row-major


def test_large_and_empty_tensors_are_not_kept_and_the_table_stays_bounded():
    views = mpi._Views()
    big = torch.zeros(mpi.VIEW_BYTES // 4 + 1)
    assert views.get(big, mpi._as_numpy) is not views.get(big, mpi._as_numpy)
    assert views.get(torch.zeros(0), mpi._as_numpy).size == 0 and not views.views
    keep = [torch.zeros(8) for _ in range(mpi.VIEW_ENTRIES + 5)]
    for t in keep:
        views.get(t, mpi._as_numpy)
    assert len(views.views) == mpi.VIEW_ENTRIES


def test_requires_grad_tensors_are_viewed_without_autograd():
    views, t = mpi._Views(), torch.ones(4, requires_grad=True)
    a = views.get(t, mpi._as_numpy)
    a[0] = 3.0
    assert t[0].item() == 3.0
    b = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)     # bytes: no numpy bfloat16
    assert views.get(b, mpi._as_bytes).size == 8
