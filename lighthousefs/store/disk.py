"""The SQLite store's file among the other users of its disk and host: who holds a lock
on it, and a reserve of space that lets removals be stored on a full disk.

On a full disk every append fails, removals too: each is an event, and an event needs
a few pages of WAL (about 9 KiB for an unlink). A removal never shrinks the store (the
content stays for `.history`), but an agent or operator cleaning up must not be told
that rm failed. So the store keeps a file of RESERVE_BYTES next to it, given back to
the disk when SQLite reports it full and only removals are waiting: about a hundred
removals then commit. It is made again once the disk has room for it; until then the
store counts as full and answers every other write with ENOSPC without trying (so
writes cannot eat the space meant for removals).
"""
from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20


def lock_holders(path: str) -> str:
    """" (pid N: command)" for the processes holding a write lock on the store's file or
    its WAL index (SQLite's locks are fcntl locks: /proc/locks lists them); "" if none
    is found. Readers hold only read locks, so other mounts at rest are not named."""
    inodes = set()
    for name in (path, path + "-shm"):
        try:
            st = os.stat(name)
            inodes.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
        except OSError:
            pass
    pids: list[int] = []
    try:
        with open("/proc/locks") as f:
            for line in f:   # "1: POSIX  ADVISORY  WRITE 10509 fe:00:2155026 120 120"
                fields = line.split()
                if "WRITE" not in fields or "->" in fields:   # "->": waiting, not holding
                    continue
                i = fields.index("WRITE")
                major, minor, ino = fields[i + 2].split(":")
                pid = int(fields[i + 1])
                if (int(major, 16), int(minor, 16), int(ino)) in inodes and pid != os.getpid() and pid not in pids:
                    pids.append(pid)
    except (OSError, ValueError, IndexError):
        return ""
    named = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
        except OSError:
            command = "?"
        named.append(f"pid {pid}: {command[:80]}")
    return f" ({'; '.join(named)})" if named else ""


class Reserve:
    """The reserve file `<store>-reserve`. Not thread-safe: the store calls it under
    its write lock."""

    def __init__(self, store_path: str, size: int = RESERVE_BYTES):
        self.path = store_path + "-reserve"
        self.size = size
        self._warned = False

    def release(self) -> bool:
        """Give the space back to the disk; False if there was no reserve to give."""
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False

    def restore(self) -> bool:
        """Make the reserve if it is missing; True if it is there now. A disk without
        room for it leaves none (no partial file)."""
        try:
            if os.path.getsize(self.path) >= self.size:
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.pwrite(fd, bytes(self.size), 0)   # no fallocate here: write the blocks
                    os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError as exc:
            self.release()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and not self._warned:
                self._warned = True
                log.warning("%s: cannot keep a reserve of disk space for removals: %s", self.path, exc)
            return False
