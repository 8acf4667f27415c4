"""A rank's shared-memory segment: its control page, its futex doorbell, liveness.

Each rank creates one segment (a file in /dev/shm, mapped MAP_SHARED) holding a
control page and one inbound ring per peer (``ring``); senders map the receiver's
segment and write into "their" ring.

Sleeping: each rank owns a 32-bit doorbell (a Linux futex word) and a count of
its sleeping threads. A waiter reads the doorbell *before* checking its rings,
raises ``sleepers``, checks once more, then FUTEX_WAITs on the value it read. A
peer that publishes data or frees space checks ``sleepers`` and, only if someone
sleeps, increments the doorbell atomically and wakes it in one FUTEX_WAKE_OP
syscall (a publish after the waiter's read changes the word, so FUTEX_WAIT returns
at once). That is Dekker's pattern: each side stores, then loads the other's
word, which needs a StoreLoad fence on both sides. Python has no fence, but a
threading.Lock acquire/release is a LOCK-prefixed compare-and-swap/add in glibc's
semaphores, a full fence on x86-64; ``fence()`` uses one. Should a wake-up still
be lost (another platform), waits are bounded at 20 ms, never a hang. No core is
burnt while ranks outnumber cores. A receiver that frees space wakes the sender
only if the sender raised the ring's ``want`` flag (it is blocked on a full ring),
by the same store-fence-load handshake. The waiting side is written once, in ``wait``.

    seg = Segment.create(path, Segment.bytes_for(peers=3, ring_bytes=8 << 20))
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import shutil
import threading
import time

PAGE = 4096
STATE_OPEN, STATE_CLOSED = 1, 2

_FUTEX_WAIT, _FUTEX_WAKE_OP = 0, 5
_WAKE_ADD_ONE = (1 << 28) | (1 << 12)   # FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0)
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory fence: glibc's semaphore ops under threading.Lock are LOCK-prefixed."""
    _FENCE.acquire()
    _FENCE.release()


def pid_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (a dead child its launcher has not reaped yet)."""
    if pid <= 0:                      # unknown (another PID namespace): rely on the timeout
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return True


class ShmUnavailable(RuntimeError):
    """This node cannot give a rank its shared-memory segment (raised on every rank alike)."""


class Segment:
    """One rank's shared file: control page, one (ctrl page + data) ring per peer, then the
    two halves of its staging area (``stage``), if it has one."""

    def __init__(self, path: str, mm: mmap.mmap, created: bool):
        self.path, self.mm, self.created = path, mm, created
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        self.pid = ctypes.c_int64.from_buffer(mm, 64)
        self.state = ctypes.c_int64.from_buffer(mm, 128)
        self.sleepers = ctypes.c_int64.from_buffer(mm, 192)   # owner's threads in bell.wait
        self.bell = Doorbell(mm, 0)

    def notify(self, wanted=None) -> None:
        """Wake the owner if it sleeps (call after publishing a counter).

        ``wanted``: a ring flag the owner raises while it waits on that ring; it
        is only woken if the flag is up (a sender is not woken for space it does not need).
        """
        fence()
        if self.sleepers.value and (wanted is None or wanted.value):
            self.bell.ring()

    @staticmethod
    def bytes_for(peers: int, ring_bytes: int, stage_half: int = 0) -> int:
        return Segment.stage_offset(peers, ring_bytes) + 2 * stage_half

    @staticmethod
    def stage_offset(peers: int, ring_bytes: int) -> int:
        return PAGE + peers * (PAGE + ring_bytes)

    @classmethod
    def create(cls, path: str, nbytes: int) -> "Segment":
        folder = os.path.dirname(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:                  # no such folder, no permission: no shared memory
            raise ShmUnavailable(f"cannot create a shared-memory segment in {folder}: "
                                 f"{e.strerror or e}. Point RINGFLOW_SHM_DIR at a writable "
                                 "tmpfs (/dev/shm) or use RINGFLOW_TRANSPORT=torch") from e
        try:
            os.ftruncate(fd, nbytes)
            # tmpfs hands out pages on first touch: a full /dev/shm (Docker's is 64 MiB) would
            # kill us with SIGBUS mid-collective. Reserving them now turns that into an error.
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            mm = mmap.mmap(fd, nbytes)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            free = shutil.disk_usage(folder).free
            raise ShmUnavailable(
                f"cannot reserve {nbytes >> 20} MiB of shared memory in {folder} "
                f"({free >> 20} MiB free): {e.strerror or e}. Enlarge it (docker run --shm-size=1g),"
                " lower RINGFLOW_SHM_RING_BYTES, point RINGFLOW_SHM_DIR elsewhere, or use "
                "RINGFLOW_TRANSPORT=torch") from e
        os.close(fd)
        seg = cls(path, mm, created=True)
        seg.pid.value, seg.state.value = os.getpid(), STATE_OPEN
        return seg

    @classmethod
    def open(cls, path: str, nbytes: int) -> "Segment":
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != nbytes:
                raise ValueError(f"shared segment {path} has {os.fstat(fd).st_size} bytes, "
                                 f"expected {nbytes}: ranks disagree on RINGFLOW_SHM_RING_BYTES")
            mm = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        return cls(path, mm, created=False)

    def unlink(self) -> None:
        """Remove the name from /dev/shm; mappings stay valid until every rank unmaps."""
        if self.created:
            self.created = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self.unlink()
        self.pid = self.state = self.bell = self.sleepers = None   # drop exports: map can close
        try:
            self.mm.close()
        except BufferError:                          # a Ring still exports it; freed at exit
            pass


class Doorbell:
    """A futex word: ``ring()`` wakes whoever sleeps in ``wait(seen, timeout)``."""

    def __init__(self, mm: mmap.mmap, offset: int):
        self.word = ctypes.c_uint32.from_buffer(mm, offset)
        self.addr = ctypes.c_void_p(ctypes.addressof(self.word))

    def value(self) -> int:
        return self.word.value

    def ring(self) -> None:
        """Atomically add one to the word and wake every sleeper (FUTEX_WAKE_OP)."""
        if HAVE_FUTEX:
            _libc.syscall(_SYS_FUTEX, self.addr, _FUTEX_WAKE_OP, 0x7FFFFFFF, None, self.addr,
                          _WAKE_ADD_ONE)
        else:
            self.word.value = (self.word.value + 1) & 0xFFFFFFFF

    def wait(self, seen: int, timeout: float) -> None:
        """Sleep until the word differs from ``seen`` or ``timeout`` seconds pass."""
        if not HAVE_FUTEX:
            time.sleep(min(timeout, 0.0005))
            return
        ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
        _libc.syscall(_SYS_FUTEX, self.addr, _FUTEX_WAIT, ctypes.c_uint32(seen),
                      ctypes.byref(ts), None, 0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _probe_futex() -> bool:
    """True when futex syscalls work here (Linux on a known CPU); else waiters poll."""
    if _SYS_FUTEX is None:
        return False
    word = ctypes.c_uint32(0)
    ok = _libc.syscall(_SYS_FUTEX, ctypes.byref(word), _FUTEX_WAKE_OP, 1, None,
                       ctypes.byref(word), _WAKE_ADD_ONE)
    return ok >= 0 and word.value == 1


HAVE_FUTEX = _probe_futex()
