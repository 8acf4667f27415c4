"""The default group: the world Communicator that ``group=None`` means in every verb and wrapper.

``ringflow.init()`` registers the world here and ``ringflow.shutdown()`` clears it, so the
collectives and parallel layers find it without importing the runtime above them.

    comm = resolve(group)      # group itself, or the world; a torch process group is refused
"""
from __future__ import annotations

from .communicator import Communicator

_DEFAULT: Communicator | None = None


def set_default(comm: Communicator | None) -> None:
    """Make ``comm`` what ``group=None`` means (None: no default until the next init())."""
    global _DEFAULT
    _DEFAULT = comm


def default() -> Communicator:
    """The world Communicator; raises if ``ringflow.init()`` was not called."""
    if _DEFAULT is None:
        raise RuntimeError("ringflow is not initialised: call ringflow.init() first "
                           "(or pass group=<Communicator>)")
    return _DEFAULT


def resolve(group: Communicator | None) -> Communicator:
    """``group`` itself, or the world when it is None."""
    if group is None:
        return _DEFAULT or default()      # default() raises the helpful error
    if not isinstance(group, Communicator):
        raise TypeError(f"group must be a ringflow Communicator or None, got {type(group).__name__}"
                        " (torch.distributed process groups are not accepted; use ringflow.init())")
    return group
