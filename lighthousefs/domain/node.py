"""One inode of the projection (Node), what one applied event changed (Change), and
the checks of a name and a time that every event meets. Pure."""
from __future__ import annotations

import dataclasses
import stat

from .. import errors

NAME_MAX = 255
# Times are stored as int64 nanoseconds (about 1677-09-21 to 2262-04-11): a time outside
# that range cannot be stored and is refused (EINVAL), not clamped (docs/decisions.md).
TIME_NS_MIN, TIME_NS_MAX = -2**63, 2**63 - 1
# What one file's extended attributes may take in all, each name counted with the NUL
# that listxattr puts after it: so listxattr and getxattr always fit the kernel's 64 KiB
# limits (past them they fail with E2BIG). A setxattr past it gets ENOSPC, as on ext4.
XATTRS_TOTAL_MAX = 64 * 1024


class Node:
    """One inode. Directories have `entries` and a single `parent`; for any other node,
    `parent` is a directory it is linked in (one of them, if it has several: they are
    all in one area), so the rules know where it is now (rules.area_of); or
    rules.SEVERAL_AREAS for a file that events from before the rules linked into two."""

    __slots__ = ("ino", "mode", "uid", "gid", "rdev", "nlink", "size", "atime_ns", "mtime_ns",
                 "ctime_ns", "chunks", "target", "xattrs", "entries", "parent", "version")

    def __init__(self, ino: int, mode: int, uid: int = 0, gid: int = 0, time_ns: int = 0):
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = 0
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.size = 0
        self.atime_ns = self.mtime_ns = self.ctime_ns = time_ns
        self.chunks = b""   # content.pack()ed hashes
        self.target = b""
        self.xattrs: dict[bytes, bytes] | None = None
        self.entries: dict[bytes, int] | None = {} if stat.S_ISDIR(mode) else None
        self.parent = 0
        # Bumped on every change, so caches of attributes can tell they are stale.
        self.version = 0

    @property
    def is_dir(self) -> bool:
        return self.entries is not None

    def dump(self) -> list:
        # Read back by snapshot.load, field by field.
        return [self.ino, self.mode, self.uid, self.gid, self.rdev, self.nlink, self.size,
                self.atime_ns, self.mtime_ns, self.ctime_ns, self.chunks, self.target,
                self.xattrs, self.entries, self.parent]

_SHARED_INTS: dict[int, int] = {}


def shared_int(value: int) -> int:
    """One int object per distinct value. For fields with few distinct values (modes):
    each unpacked int is its own 28-byte object otherwise, megabytes at 100k files."""
    return _SHARED_INTS.setdefault(value, value)


@dataclasses.dataclass
class Change:
    """What one applied event changed, for invalidating caches (the kernel's and ours)."""

    entries: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    inodes: list[int] = dataclasses.field(default_factory=list)


def check_name(name: bytes) -> None:
    if not name or name in (b".", b".."):
        raise errors.InvalidArgument(f"invalid name {name!r}")
    if b"/" in name or b"\0" in name:
        raise errors.InvalidArgument(f"a name may not contain '/' or NUL: {name!r}")
    if len(name) > NAME_MAX:
        raise errors.NameTooLong(f"name of {len(name)} bytes (at most {NAME_MAX})")


def check_time(value) -> None:
    if type(value) is not int or not TIME_NS_MIN <= value <= TIME_NS_MAX:
        raise errors.InvalidArgument(f"time {value!r} ns is outside what the store holds (years 1677-2262)")
