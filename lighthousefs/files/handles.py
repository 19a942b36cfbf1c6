"""The handles of open files: what a file handle (fh) given to the kernel stands for.

An OpenFile is the one buffer shared by every handle open on an inode; a FileHandle is
one open() of it. The other handles are the views' (views/), read-only, each with
`read(off, size)`: a past version (ReadOnlyFile, here), a control file's bytes fixed
at open, the events file. `Handles` numbers them all.
"""
from __future__ import annotations

import itertools
import time

import trio

from .. import errors
from ..domain.rules import FormatCheck
from .buffer import FileBuffer

UNKNOWN = b"?"   # an open file's format, not looked up yet


class Repeated(errors.LighthouseError):
    """A handle's refusal answered again (its errno, to a later write, close or fsync):
    logged once, when it happened, and not again (fs/boundary.py)."""

    def __init__(self, refused: errors.LighthouseError):
        super().__init__(str(refused), errno_=refused.errno)


class OpenFile:
    """The one buffer shared by every handle open on an inode."""

    __slots__ = ("ino", "buffer", "refs", "lost", "times", "kernel_stale", "kind", "check", "check_mark",
                 "committing", "reverted")

    def __init__(self, ino: int, buffer: FileBuffer):
        self.ino = ino
        self.buffer = buffer
        self.refs = 0
        # The kernel's pages or size of this file may be wrong (an append it placed at
        # its own offset, or moved after another node's content): dropped before close
        # returns, so a reader that opens next sees the stored content.
        self.kernel_stale = False
        # Set when a new file could not be logged and was dropped: every handle still
        # open on it fails from then on, instead of writing into nothing.
        self.lost: errors.LighthouseError | None = None
        # Why its unstored writes were last discarded (Writer.revert): InvalidArgument
        # after a refusal of its content, another error after a failed commit.
        self.reverted: errors.LighthouseError | None = None
        # (mtime, ctime) of the changes made through handles and not yet committed: a
        # write or truncate moves them when it happens, as on ext4, not at close. stat
        # shows them and the commit stores them.
        self.times: tuple[int, int] | None = None
        # STATE_FILE or STATUS_FILE for a file whose format is checked (looked up at its
        # first write), and the check of what was written so far: valid while the
        # buffer is the one in `check_mark`, at the generation there.
        self.kind: bytes | None = UNKNOWN
        self.check: FormatCheck | None = None
        self.check_mark: tuple[FileBuffer, int] | None = None
        self.committing = trio.Lock()   # held by the commit of this file's buffer (_commit)

    def touched(self) -> None:
        now = time.time_ns()
        self.times = (now, now)


class FileHandle:
    __slots__ = ("open_file", "writable", "flush_failed", "append", "wrote", "truncated", "refused")

    def __init__(self, open_file: OpenFile, writable: bool, append: bool = False):
        self.open_file = open_file
        self.writable = writable
        self.append = append   # O_APPEND: every write goes to the end of the file
        # close() already reported this commit's failure: release does not retry it.
        self.flush_failed = False
        # A write or ftruncate through this handle since its last commit (see flush).
        self.wrote = False
        self.truncated = False   # opened with O_TRUNC: committed at its release (see release)
        # A write or close through this handle was refused as bad content (EINVAL): the
        # stored content stays, and every later write and close of the handle fails.
        self.refused: errors.LighthouseError | None = None


class ReadOnlyFile:
    """A past version of a file (.history), read through a buffer that is never written."""

    __slots__ = ("buffer",)
    keep_cache = True   # a past version never changes

    def __init__(self, buffer: FileBuffer):
        self.buffer = buffer

    async def read(self, off: int, size: int) -> bytes:
        return await self.buffer.read(off, size)


class Handles(dict):
    """fh -> handle (or a directory's listing): everything open on the mount."""

    def __init__(self):
        super().__init__()
        self._next_fh = itertools.count(1)

    def add(self, handle: object) -> int:
        fh = next(self._next_fh)
        self[fh] = handle
        return fh
