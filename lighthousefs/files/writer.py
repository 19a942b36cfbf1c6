"""The writer: open files and files created here, and their commits.

It owns the open files (one OpenFile per inode, shared by its handles) and the files
created here and not yet logged (newfiles.py), and turns their changes into events: a
WRITE at close (or fsync), or the one MKNOD of a new file. It reaches the kernel only
through a small port (`ports.KernelPort`, implemented by fs/kernel.py), and what a file's
name allows through `format_of`, handed in: no pyfuse3 and no rules here.

Concurrency: the commits of one open file take turns (OpenFile.committing); a new
file's MKNOD is logged under its own lock (NewFile.lock). File contents are committed
without the namespace lock: a write event can never conflict by name.
"""
from __future__ import annotations

import errno
import functools
import logging
from typing import Callable

import trio

from .. import errors
from ..domain import events
from ..domain.events import Event
from ..domain.rules import check_format_size, validate_format
from ..domain.tree import Change, Node
from ..engine.journal import Journal
from .buffer import FileBuffer
from .chunk_cache import Chunks
from .commits import Commits
from .handles import UNKNOWN, FileHandle, Handles, OpenFile, Repeated
from .newfiles import NewFile, NewFiles
from .ports import KernelPort

log = logging.getLogger(__name__)

# A format check of more bytes than this runs in a worker thread (about 4 MB/s in Python
# on a loaded 2-core VM: 16 KiB is 4 ms).
LARGE_CHECK = 16 << 10
# What a state.json or status may not hold: the content is refused, the old one stays.
CONTENT_REFUSALS = (errors.InvalidArgument, errors.FileTooLarge)


async def validate(kind: bytes, data: bytes) -> None:
    """Refuse (EINVAL) content that is not a valid `kind` (domain/rules.py)."""
    if len(data) > LARGE_CHECK:
        await trio.to_thread.run_sync(validate_format, kind, data)
    else:
        validate_format(kind, data)


class Writer:
    """`format_of(ino)`: STATE_FILE or STATUS_FILE for a file whose content is checked,
    else None; `path_of(ino)`: a file's path for events and logs."""

    def __init__(self, journal: Journal, chunks: Chunks, kernel: KernelPort, handles: Handles,
                 format_of: Callable[[int], bytes | None], path_of: Callable[[int], str]):
        self.journal = journal
        self.tree = journal.tree
        self.store = journal.store
        self.chunks = chunks
        self.kernel = kernel
        self.handles = handles
        self._format_of = format_of
        self._path_of = path_of
        self.open_files: dict[int, OpenFile] = {}
        self.new_files = NewFiles()   # created here, not yet in the log (newfiles.py)
        self._reserve_lock = trio.Lock()
        self.commits = Commits(journal, chunks.cache, self.new_files, self._abandon, path_of)

    def live_node(self, ino: int) -> Node | None:
        """A live inode: in the tree, or created here and not yet in the log."""
        return self.tree.nodes.get(ino) or self.new_files.node(ino)

    def committed_buffer(self, node: Node) -> FileBuffer:
        """A buffer of the file's stored content (what a new open sees)."""
        return FileBuffer(node.chunks, node.size, functools.partial(self.chunks.fetch, ino=node.ino),
                          self.chunks.put)

    def name_of(self, ino: int) -> str:
        new = self.new_files.get(ino)
        return self.tree.path(new.parent, new.name) if new is not None else self._path_of(ino)

    def on_applied(self, event: Event, change: Change | None, local: bool) -> None:
        """An event was applied: a new file it logged is a tree node from now on, and
        open files whose content another node changed read the new content."""
        if change is not None and event.type == events.MKNOD and event.payload.get("ino") in self.new_files:
            self._adopt(event.payload["ino"])
        if local or change is None:
            return
        for ino in change.inodes:
            open_file = self.open_files.get(ino)
            node = self.tree.nodes.get(ino)
            if open_file is not None and node is not None and not open_file.buffer.changed \
                    and not node.is_dir:
                open_file.buffer = self.committed_buffer(node)

    def forget_formats(self, change: Change | None) -> None:
        """Open files renamed or linked: their format is looked up again at their next write."""
        for ino in change.inodes if change is not None else ():
            open_file = self.open_files.get(ino)
            if open_file is not None:
                open_file.kind, open_file.check = UNKNOWN, None

    # ---- files created here, not yet in the log (newfiles.py) ----------------------------

    def may_defer(self, parent: int, name: bytes) -> bool:
        """May this create wait for the file's first close to be logged? Only while the
        store is known to be reachable: else the create itself is logged, and fails where
        a shell sees it (bash ignores the errors of close)."""
        return self.journal.store_reachable() and not self.store.full

    def check_reachable(self) -> None:
        """Content is accepted (write(), O_TRUNC) only while the store is known to be
        reachable: a shell that ignores close() sees the failure here instead."""
        if not self.journal.store_reachable():
            raise errors.StoreUnavailable("the store is not known to be reachable; refusing new content")
        full = self.store.full
        if full:
            raise errors.StoreFull(full)

    async def make_new_file(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                            check: Callable[[], None]) -> Node:
        """A file created here, logged at its first close. `check` refuses the name."""
        while True:
            # The checks run again after a reservation awaited the store; from the last
            # of them to add(), no await lets another change take the name.
            check()
            ino = self.new_files.take_ino()
            if ino is not None:
                break
            await self._reserve_inodes()
        return self.new_files.add(ino, parent, name, mode, uid, gid)

    async def _reserve_inodes(self) -> None:
        async with self._reserve_lock:
            if not self.new_files.used_up:
                return   # another create reserved while this one waited
            event, _ = await self.commits.submit_one(events.reserve_inodes())
            self.new_files.add_range(events.inode_range(event.seq))

    def check_free(self, parent: int, name: bytes) -> None:
        """The tree's checks do not see files created here that are not logged yet."""
        if self.new_files.find(parent, name) is not None:
            raise errors.Exists(f"{self.tree.path(parent, name)} exists")

    async def settle(self, ino: int) -> None:
        """Log a file created here now, before a change that the tree must check."""
        if ino in self.new_files:
            open_file = self.open_files[ino]
            await self.commit(ino, open_file.buffer, open_file)

    async def settle_name(self, parent: int, name: bytes) -> None:
        """Log the new file of that name, or the new files in the directory of that
        name, before the name is removed or replaced (the tree would not see them)."""
        logged = self.tree.find(parent, name)
        new = self.new_files.find(parent, name)
        if new is not None and logged is None:
            # (If another node logged that name first, the change is about its file:
            # this one's conflict is for its own close to report.)
            await self.settle(new.node.ino)
        if logged is not None and logged.is_dir:
            for new in self.new_files.in_dir(logged.ino):
                await self.settle(new.node.ino)

    def _adopt(self, ino: int) -> None:
        """A new file's MKNOD was applied (by its close, or by the follower after an
        append that had been reported failed): from now on it is a tree node."""
        self.new_files.remove(ino)   # (the kernel's references are to the inode: they stay)

    def _abandon(self, new: NewFile, reason: str) -> None:
        """A file created here that cannot be logged disappears (the error went to close);
        quietly after a refusal of its content, logged once already, naming the rule."""
        path, open_file = self.tree.path(new.parent, new.name), self.open_files.get(new.node.ino)
        log.log(logging.DEBUG if open_file and isinstance(open_file.reverted, CONTENT_REFUSALS) else logging.WARNING,
                "%s: the new file is dropped, its content was not stored: %s", path, reason)
        self.new_files.drop(new.node.ino)
        new.node.nlink = 0
        if open_file is not None:
            open_file.lost = errors.LighthouseError(f"{path} was dropped before it was stored: {reason}",
                                                    errno_=errno.ESTALE)
        self.kernel.drop(new.node.ino)
        self.kernel.invalidate_entry(new.parent, new.name)

    # ---- writes and closes ---------------------------------------------------------------

    async def write(self, handle: FileHandle, off: int, buf: bytes) -> int:
        """Into the open file's buffer (its checks passed): committed at close."""
        open_file = handle.open_file
        while True:
            buffer = open_file.buffer
            if handle.append:
                # The kernel's offset is its cached size, stale if another node appended:
                # the end is where this daemon's buffer ends, and the kernel must forget
                # the size and the pages it wrote at its own offset.
                if off != buffer.size:
                    open_file.kernel_stale = True
                    self.kernel.invalidate_later(open_file.ino)
                written = await buffer.append(buf)
            else:
                written = await buffer.write(off, buf)
            if open_file.buffer is buffer:
                break
            # Another node's change replaced the unchanged buffer while this write
            # awaited a chunk (on_applied): the write goes to the new one.
        if open_file.check is not None:
            open_file.check_mark = (open_file.buffer, open_file.buffer.generation)
        if written:
            open_file.touched()
        handle.wrote = True
        return written   # (short only at the largest file, as on ext4)

    async def truncate_now(self, node: Node, size: int) -> None:
        """truncate(2) by path: one write event now (the file may not be open at all)."""
        open_file = self.open_files.get(node.ino)
        buffer = open_file.buffer if open_file else self.committed_buffer(node)
        await buffer.truncate(size)
        await self.commit(node.ino, buffer, open_file)

    def revert(self, open_file: OpenFile, failed: errors.LighthouseError | None = None) -> None:
        """Refused content (or content whose commit `failed`: an error from close() means
        "not stored", so no later commit may store it) leaves the stored content, for
        every handle: the open buffer goes back to it (a new file's is empty), and the
        kernel drops what it cached of the discarded bytes."""
        node = self.live_node(open_file.ino)
        if node is not None:
            open_file.buffer = self.committed_buffer(node)
        open_file.check = None
        open_file.times = None
        open_file.kernel_stale = True   # dropped at once, and for sure before the close answers
        self.kernel.invalidate_later(open_file.ino)
        # Every other handle's unstored writes went with it: their writes, closes and
        # fsyncs say so from now on, instead of a close that answers 0 for lost bytes.
        why = "a write through another one was refused" if failed is None else f"its commit failed ({failed})"
        lost = open_file.reverted = (errors.InvalidArgument if failed is None else errors.LighthouseError)(
            f"{self.name_of(open_file.ino)}: what this descriptor wrote was discarded: {why}")
        for other in self.handles.values():
            if isinstance(other, FileHandle) and other.open_file is open_file and other.refused is None \
                    and (other.wrote or other.truncated):
                other.refused = lost

    async def flush(self, handle: object) -> None:
        """close() of a descriptor: an error means "not stored"."""
        if not isinstance(handle, FileHandle):
            return
        open_file = handle.open_file
        if handle.refused is not None:
            await self.drop_stale_pages(open_file)
            raise Repeated(handle.refused)   # what it wrote was not stored
        # Only a handle that wrote (or ftruncated) since its last commit commits here: a
        # reader's close does not log another handle's unfinished writes, and bash closes
        # the descriptor it dup'd before it writes. An O_TRUNC or a new file that nothing
        # was written to is committed by the release.
        if handle.writable and handle.wrote and (open_file.buffer.changed or open_file.ino in self.new_files):
            handle.wrote = handle.truncated = False
            try:
                await self.commit(open_file.ino, open_file.buffer, open_file)
            except CONTENT_REFUSALS as exc:
                handle.refused = exc   # commit put the stored content back
                await self.drop_stale_pages(open_file)
                raise
            except errors.LighthouseError as exc:
                handle.flush_failed = True
                if open_file.buffer.changed and open_file.lost is None:
                    # Not stored, so never stored later by another handle's close.
                    self.revert(open_file, exc)
                    await self.drop_stale_pages(open_file)
                raise
            handle.flush_failed = False
        elif self._release_commits(handle):
            # What the release will commit is checked here, where the caller sees it (an empty
            # state.json), changing nothing and unlogged (Repeated): bash closes the descriptor
            # it dup'd before it writes; the release logs the refusal if it still stands then.
            try:
                await self._check_content(open_file.ino, self._format_of(open_file.ino), open_file.buffer, None)
            except CONTENT_REFUSALS as exc:
                raise Repeated(exc) from None

    async def fsync(self, handle: object) -> None:
        """The file's content stored and durable, or an error (the file's creation and
        renames are made durable in any case)."""
        if isinstance(handle, FileHandle) and handle.open_file.lost is not None:
            raise handle.open_file.lost
        if isinstance(handle, FileHandle) and handle.refused is not None:
            await self.drop_stale_pages(handle.open_file)
            raise Repeated(handle.refused)
        if isinstance(handle, FileHandle) and self._commits_for(handle) and (
                handle.open_file.buffer.changed or handle.open_file.ino in self.new_files):
            try:
                await self.commit(handle.open_file.ino, handle.open_file.buffer, handle.open_file)
            except CONTENT_REFUSALS as exc:
                handle.refused = exc
                await self.drop_stale_pages(handle.open_file)
                raise
        else:
            await self.journal.sync()   # the file's creation and renames, made durable

    def _commits_for(self, handle: FileHandle) -> bool:
        """May a release or fsync of `handle` commit the file's shared buffer, with what
        other handles wrote into it? Not a state.json or status that this handle did not
        change while another is open: its unfinished document would be checked, refused
        and thrown away."""
        open_file = handle.open_file
        if handle.wrote or handle.truncated or open_file.refs == 1:
            return True
        if open_file.kind is UNKNOWN:
            open_file.kind = self._format_of(open_file.ino)
        return open_file.kind is None

    def _release_commits(self, handle: FileHandle) -> bool:
        """Will the release of `handle` commit? (A new file opened O_RDONLY|O_CREAT is
        logged when its last handle closes; one a writer closed is logged by then.)"""
        open_file = handle.open_file
        return handle.refused is None and not handle.flush_failed and (
            (open_file.buffer.changed and handle.writable and self._commits_for(handle))
            or (open_file.ino in self.new_files and open_file.refs == 1))

    async def release(self, handle: object) -> None:
        """The last close of a handle (its fh is gone from the table)."""
        if not isinstance(handle, FileHandle):
            return
        open_file = handle.open_file
        try:
            if self._release_commits(handle):
                try:
                    await self.commit(open_file.ino, open_file.buffer, open_file)
                except CONTENT_REFUSALS as exc:   # (logged already if a write or close refused it)
                    raise (Repeated(exc) if handle.refused is not None else exc) from None
        finally:
            open_file.refs -= 1
            if open_file.refs == 0:
                new = self.new_files.get(open_file.ino)
                if new is not None:
                    async with new.lock:   # after a rename or fsync logging it right now
                        if open_file.ino in self.new_files:
                            self._abandon(new, "it was closed without being stored (see the error of its close)")
                del self.open_files[open_file.ino]
                self.tree.release_orphan(open_file.ino)   # dropped if unlinked and not looked up

    # ---- commits ---------------------------------------------------------------------------

    async def commit(self, ino: int, buffer: FileBuffer, open_file: OpenFile | None) -> None:
        """One close() of a written file: one event, durable when this returns. The
        commits of an open file take turns, and one that finds everything stored by the
        one before has nothing to do (a close racing a rename that logs the new file
        first would otherwise find it logged but not yet marked stored, and store it twice)."""
        if open_file is None:
            await self._commit_now(ino, buffer, None)
            return
        async with open_file.committing:
            if buffer.changed or ino in self.new_files or open_file.lost is not None:
                await self._commit_now(ino, buffer, open_file)

    async def _commit_now(self, ino: int, buffer: FileBuffer, open_file: OpenFile | None) -> None:
        new = self.new_files.get(ino)
        if new is not None:
            async with new.lock:
                if ino in self.new_files:
                    await self._check_content(ino, self._format_of(ino), buffer, open_file)
                    await self.commits.store_content(buffer, new, open_file)
                    return
        if open_file is not None and open_file.lost is not None:
            raise open_file.lost   # e.g. the close that held the lock dropped the file
        if new is not None and not buffer.changed:
            return   # the close that logged the file stored all of it
        node = self.tree.nodes.get(ino)
        if node is None or node.nlink == 0:
            return  # unlinked while open: nothing visible changes, nothing to store
        kind = self._format_of(ino)
        await self._check_content(ino, kind, buffer, open_file)
        if kind is None and open_file is not None and buffer.appends_only:
            # (Under open_file.committing, held by commit: one commit of appends at a
            # time, each knowing the content it appends to.)
            await self.commits.store_appends(buffer, open_file)
            await self.drop_stale_pages(open_file)
            return
        await self.commits.store_content(buffer, ino, open_file)

    async def drop_stale_pages(self, open_file: OpenFile) -> None:
        """Before a close or fsync answers: the kernel forgets pages and a size of this
        file that the store does not hold (appends it placed at its own offset, refused
        bytes), so a reader that opens next reads what is stored. Only from FLUSH and
        FSYNC: no kernel lock this waits for is held across them (a WRITE holds its pages)."""
        if open_file.kernel_stale:
            open_file.kernel_stale = False
            await self.kernel.drop_pages(open_file.ino)

    async def _check_content(self, ino: int, kind: bytes | None, buffer: FileBuffer,
                             open_file: OpenFile | None) -> None:
        """The content that will stand must fit its format; refused, the stored content
        stays, for every handle."""
        if kind is None:
            return
        try:
            check_format_size(kind, buffer.size)
            await validate(kind, await buffer.read(0, buffer.size))
        except CONTENT_REFUSALS as exc:
            if open_file is not None:
                self.revert(open_file)
            raise type(exc)(f"{self.name_of(ino)}: {exc}") from None
