"""The shared-memory transport: ranks of one node talking through /dev/shm, no messages through
a network stack. ``ShmTransport`` is the transport; the modules under it, bottom up:

    segment    a rank's mapped file, its control page and futex doorbell
    ring       the single-producer single-consumer byte ring per directed pair of ranks
    channel    messages over a ring: an Outbox streams sends in, an Inbox matches receives
    stage      the staging area that staged collectives read in place
    board      RINGFLOW_DEBUG's fingerprints, posted in a control page
    bootstrap  the handshake that swaps segment names and maps every peer's segment
    node       a segment per rank beside the torch (gloo) and MPI transports on one node
    wait       the one spin-then-sleep wait (shm, node, MPI and NCCL requests)
    transport  ShmTransport

    from ringflow.transport.shm import ShmTransport, ShmUnavailable
"""
from .segment import ShmUnavailable
from .transport import ShmTransport

__all__ = ["ShmTransport", "ShmUnavailable"]
