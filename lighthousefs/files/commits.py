"""How an open file's content becomes events: a WRITE on its inode, the MKNOD of a new
file, or a conditional WRITE of appends that is tried again while others' writes land.

Below files/writer.py, which decides when to commit; this stores what it is handed.
"""
from __future__ import annotations

from typing import Callable

import trio

from .. import errors
from ..domain import events
from ..domain.chunks import content_digest
from ..domain.events import Draft, Event
from ..domain.tree import Change, Node
from ..engine.journal import Journal
from .buffer import FileBuffer, Pending
from .chunk_cache import ChunkCache
from .handles import OpenFile
from .newfiles import NewFile, NewFiles

LARGE_COMMIT = 1 << 20
LARGE_CHUNK_LIST = 1024   # a commit of a file of more chunks builds its list in a worker thread too
# An append is tried again after each write of the file by another producer that landed
# first; past this many, its close fails (nothing of it stored).
APPEND_ROUNDS = 100


def pending_times(open_file: OpenFile | None, node: Node | None) -> dict[str, int]:
    """The times an open file's uncommitted changes gave it, for stat and its commit
    ({} if none: the commit's event time stands)."""
    if open_file is None or open_file.times is None:
        return {}
    mtime, ctime = open_file.times
    # A chmod since then moved ctime on; it never goes back.
    return {"mtime": mtime, "ctime": max(ctime, node.ctime_ns) if node is not None else ctime}


class Commits:
    """`drop(new, reason)`: the writer drops a new file that cannot be logged (the error
    goes to its close); `path_of(ino)`: a file's path for events and logs."""

    def __init__(self, journal: Journal, cache: ChunkCache, new_files: NewFiles,
                 drop: Callable[[NewFile, str], None], path_of: Callable[[int], str]):
        self.journal = journal
        self.tree = journal.tree
        self.cache = cache
        self.new_files = new_files
        self._drop = drop
        self._path_of = path_of

    async def submit_one(self, draft: Draft, chunks: dict[bytes, bytes] | None = None,
                         durable: bool = False) -> tuple[Event, Change | None]:
        """Namespace changes are safe from a crash once they return, and durable against
        power loss at the next fsync or close of a written file (like rename on ext4);
        contents are durable at close()."""
        [result] = await self.journal.submit([draft], chunks, durable)
        return result

    async def log_new_file(self, new: NewFile, pending: Pending, times: dict[str, int]) -> None:
        """One MKNOD with the file's name, attributes, inode and content."""
        node = new.node
        draft = events.mknod(self.tree.path(new.parent, new.name), new.parent, new.name, node.mode,
                             uid=node.uid, gid=node.gid, ino=node.ino, size=pending.size, chunks=pending.hashes,
                             times=times)
        try:
            self.tree.check(draft)
        except (errors.Exists, errors.NotFound, errors.NotADirectory) as exc:
            self._drop(new, str(exc))
            raise
        _, change = await self.submit_one(draft, pending.chunks, durable=True)
        if change is not None:
            return   # applied: on_applied adopted the file
        if node.ino not in self.new_files:
            # An earlier append of this file, reported failed but stored, was applied
            # first (the outcome of a failed append is unknown): store this content on it.
            await self.submit_one(self.write_draft(node.ino, pending, times), pending.chunks, durable=True)
            return
        self._drop(new, "another producer took the name first")
        raise errors.Exists(f"{draft.path} was created by another producer first")

    def write_draft(self, ino: int, pending: Pending, times: dict[str, int] | None = None,
                     base: bytes | None = None) -> Draft:
        return events.write(self._path_of(ino), ino, pending.size, pending.hashes, times=times, base=base)

    async def store_content(self, buffer: FileBuffer, target: int | NewFile,
                             open_file: OpenFile | None = None, append: bool = False) -> bool:
        """Store the buffer: a write event on inode `target`, or the MKNOD of a new file,
        with the times its changes gave it. With `append`, the event of an append is
        conditional (see store_appends) and False means it was skipped: nothing was stored."""
        stamped = open_file.times if open_file is not None else None
        node = target.node if isinstance(target, NewFile) else self.tree.nodes.get(target)
        times = pending_times(open_file, node)
        pending = buffer.snapshot()
        if buffer.dirty_bytes() > LARGE_COMMIT or len(buffer.chunks) > LARGE_CHUNK_LIST:
            await trio.to_thread.run_sync(pending.seal)
        else:
            pending.seal()
        if isinstance(target, NewFile):
            await self.log_new_file(target, pending, times)
        else:
            base = pending.base if append else None
            _, change = await self.submit_one(self.write_draft(target, pending, times, base), pending.chunks,
                                              durable=True)
            if change is None and base is not None:
                return False
        buffer.mark_committed(pending)
        if open_file is not None and open_file.times is stamped:
            open_file.times = None   # stored; (a change made meanwhile stays for the next commit)
        self.cache.put_fresh(pending.chunks)
        return True

    async def store_appends(self, buffer: FileBuffer, open_file: OpenFile) -> None:
        """Store what only O_APPEND handles changed since the buffer's base: its event
        names the content it was made on, and every node skips it if the file's content
        has changed meanwhile. The appended bytes then go after the file's content as it
        is now, and the event is tried again; each round skipped is one in which another
        producer's write of the file landed."""
        ino = open_file.ino
        for _ in range(APPEND_ROUNDS):
            if not await self._rebase_appends(buffer, open_file):
                return   # unlinked on every node meanwhile: nothing visible changes
            if await self.store_content(buffer, ino, open_file, append=True):
                return
        raise errors.LighthouseError(f"{self._path_of(ino)}: not stored, the file was written by others "
                                     f"{APPEND_ROUNDS} times while this append was tried")

    async def _rebase_appends(self, buffer: FileBuffer, open_file: OpenFile) -> bool:
        """Appends made on content that has been replaced since go after the file's
        content as it is now (see store_appends). False if the file is gone."""
        node = self.tree.nodes.get(open_file.ino)
        if node is None or node.nlink == 0:
            return False
        if buffer.appends_only and buffer.base != content_digest(node.size, node.chunks):
            await buffer.rebase(node.chunks, node.size)
            open_file.kernel_stale = True   # its pages hold the appends where they were
        return True
