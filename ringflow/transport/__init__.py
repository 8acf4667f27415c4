"""Point-to-point transports; torch_dist and mpi are imported lazily (mpi4py is optional)."""
from .base import DoneWork, PeerTimeout, Transport, TransportError, Work
from .local import LocalTransport

__all__ = ["Transport", "Work", "DoneWork", "PeerTimeout", "TransportError", "LocalTransport"]
