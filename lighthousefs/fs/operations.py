"""The pyfuse3 Operations: FUSE requests in, tree queries and journal submissions out.

Errors are translated at one boundary (boundary.py): domain errors become their errno,
anything unexpected is logged with its traceback and answered with EIO. Handlers do no
blocking I/O on the trio thread: the store is reached through the journal, the
history and the events file, which use worker threads.

Concurrency: namespace changes hold `_ns_lock` from their check to the applied event,
so no other local change can slip between "the name is free" and "the name is taken".
File contents are committed without it (a write event can never conflict by name).
A file created without O_EXCL takes its name locally at once (newfiles.py), with no
await between the checks and taking it; every local check consults those names, so
its MKNOD at close needs no lock either: only another producer can have taken the
name meanwhile, and then the close reports it.
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
from typing import Callable

import pyfuse3
import trio

from .. import errors
from ..domain import events
from ..domain.chunks import content_digest, seal_full
from ..domain.events import Draft, Event
from ..domain.rules import STATE_FILE, STATUS_FILE, FormatCheck, Policy, check_format_size, validate_format
from ..domain.tree import AGENTS_INO, ROOT_INO, Change, Node
from ..engine.journal import Journal
from ..files.buffer import FileBuffer, Pending
from ..files.chunk_cache import ChunkCache
from ..files.handles import UNKNOWN, BytesHandle, EventsHandle, FileHandle, Handles, OpenFile, ReadOnlyFile
from ..files.newfiles import NewFile, NewFiles
from ..metrics import Metrics
from ..store import report_corrupt
from ..views.events_file import EventsFile
from ..views.history import History
from .attrs import CACHE_TIMEOUT, Attrs
from .boundary import guard
from .kernel import Kernel

log = logging.getLogger(__name__)

EVENTS_INO = 6
CONTROL_INO = 7
CONTROL_FILES = {b"stats": 8, b"health": 9, b"version": 10}
CONTROL_INOS = {ino: name for name, ino in CONTROL_FILES.items()}
HISTORY_NAME = b".history"
FIRST_HISTORY_INO = events.RESERVED_INO_END   # .history entries: numbered per mount
LARGE_COMMIT = 1 << 20
# A format check of more bytes than this runs in a worker thread (about 4 MB/s in Python
# on a loaded 2-core VM: 16 KiB is 4 ms).
LARGE_CHECK = 16 << 10
LARGE_CHUNK_LIST = 1024   # a commit of a file of more chunks builds its list in a worker thread too
CHUNK_CACHE_BYTES = 64 << 20
# Readahead only where L1 keeps what it brings until it is read (--cache-mb 0: never).
READAHEAD_MIN_CACHE_BYTES = 8 << 20
XATTR_VALUE_MAX = 64 * 1024
# What a state.json or status may not hold: the content is refused, the old one stays.
CONTENT_REFUSALS = (errors.InvalidArgument, errors.FileTooLarge)
# An append is tried again after each write of the file by another producer that landed
# first; past this many, its close fails (nothing of it stored).
APPEND_ROUNDS = 100


class HistoryListing(list):
    """A .history directory's entries, (name, key): numbered only as they are listed."""

    __slots__ = ()


class LighthouseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, journal: Journal, policy: Policy, control: Callable[[bytes], bytes], metrics: Metrics,
                 cache_bytes: int = CHUNK_CACHE_BYTES):
        super().__init__()
        self.journal = journal
        self.tree = journal.tree
        self.store = journal.store
        self.policy = policy
        self.control = control
        self.metrics = metrics
        self._op_timers = {name: metrics.op_seconds.labels(name).observe for name in _HANDLER_NAMES}
        self._chunks = ChunkCache(cache_bytes, on_hit=metrics.cache.labels("l1", "hit").inc,
                                  on_miss=metrics.cache.labels("l1", "miss").inc)
        metrics.cache_bytes.set_function(lambda: self._chunks.bytes)
        self.history = History(self.store, journal.call_store)
        metrics.history_trees.set_function(lambda: self.history.trees_kept)
        metrics.history_tree_inodes.set_function(lambda: self.history.inodes_kept)
        metrics.history_inodes.set_function(lambda: len(self._hist_keys))
        self.events_file = EventsFile(self.store, journal.call_store, self._event_visible,
                                      lambda: self.tree.applied_seq)
        self._ns_lock = trio.Lock()
        self._open_files: dict[int, OpenFile] = {}
        self.attrs = Attrs(self.tree, self._open_files, self._pending_times)
        self._attrs = self.attrs.cache
        self._attr, self._build_attr, self._virtual_attr = self.attrs.attr, self.attrs.build_attr, \
            self.attrs.virtual_attr
        self.kernel = Kernel(self.tree, self._open_files.__contains__)
        self._remember, self._path_of, self._invalidate_later = \
            self.kernel.remember, self.kernel.path_of, self.kernel.invalidate_later
        self._where = self.kernel.where
        self._new_files = NewFiles()   # created here, not yet in the log (newfiles.py)
        metrics.new_files.set_function(lambda: len(self._new_files))
        self._reserve_lock = trio.Lock()
        self._handles = Handles()
        self._new_fh = self._handles.add
        # .history inodes: numbered as the kernel is told of them, and dropped when it
        # forgets them (its references counted in _hist_lookups), so a walk of many
        # versions leaves nothing behind.
        self._hist_keys: dict[int, tuple] = {}
        self._hist_inos: dict[tuple, int] = {}
        self._hist_lookups: dict[int, int] = {}
        self._next_hist_ino = itertools.count(FIRST_HISTORY_INO)
        journal.listeners.append(self._on_applied)

    @property
    def kernel_inodes(self) -> int:
        return self.kernel.inodes

    # ---- helpers ---------------------------------------------------------------------

    def _live_node(self, ino: int) -> Node | None:
        """A live inode: in the tree, or created here and not yet in the log."""
        return self.tree.nodes.get(ino) or self._new_files.node(ino)

    def _node(self, ino: int) -> Node:
        node = self._live_node(ino)
        if node is None:
            raise errors.NotFound(f"no inode {ino}")
        return node

    async def _fetch_chunks(self, digests: list[bytes], ahead: list[bytes] = (), *, ino: int = 0) -> list[bytes]:
        """Chunks from L1, and what L1 lacks from the store in one call. If that call is
        made, the `ahead` chunks L1 lacks come with it (readahead; see content.py), when
        L1 is large enough to keep them until they are read. A damaged chunk is logged
        naming the file `ino`; one met only ahead does not fail this read."""
        found = [self._chunks.get(digest) for digest in digests]
        missing = [digest for digest, data in zip(digests, found) if data is None]
        if missing:
            needed = len(missing)
            if ahead and self._chunks.max_bytes >= READAHEAD_MIN_CACHE_BYTES:
                wanted = set(missing)
                missing += [d for d in dict.fromkeys(ahead) if d not in wanted and not self._chunks.holds(d)]
            try:
                fetched = dict(zip(missing, await self.journal.call_store(self.store.get_chunks, missing)))
            except (errors.ChunkCorrupt, errors.ChunkMissing) as exc:
                if isinstance(exc, errors.ChunkCorrupt):
                    report_corrupt(exc, lambda: self._path_of(ino) if ino else "a file")
                if not set(exc.digests) & set(missing[:needed]):
                    return await self._fetch_chunks(digests, ino=ino)   # only ahead: read without
                raise
            for digest, data in fetched.items():
                self._chunks.put(digest, data)
            found = [fetched[digest] if data is None else data for digest, data in zip(digests, found)]
        return found

    def _committed_buffer(self, node: Node) -> FileBuffer:
        """A buffer of the file's stored content (what a new open sees)."""
        return FileBuffer(node.chunks, node.size, functools.partial(self._fetch_chunks, ino=node.ino),
                          self._put_chunks)

    async def _put_chunks(self, datas: list) -> list[bytes | None]:
        """Full chunks of an open file, hashed and stored in a worker thread before the
        event that names them (see content.py): their hashes (None for zeros)."""
        def put():
            hashes, chunks = seal_full(datas)
            self.store.append([], chunks, False)   # durable with the event at close
            return hashes
        # Not kept in L1: a large file streams past, and would push out what is read.
        # Patient, as appends are: a slow store makes the write wait, never fail while
        # the chunks are still being stored (content-addressed: harmless either way).
        return await self.journal.call_store(put, write=True, patient=True)

    def _require_tree_node(self, ino: int) -> Node:
        """The inode `ino` of the live tree, or the errno a change to it gets."""
        if ino in self._hist_keys:
            raise errors.ReadOnly(".history is read-only")
        if ino in (EVENTS_INO, CONTROL_INO) or ino in CONTROL_INOS:
            raise errors.NotPermitted("the control files cannot be changed")
        return self.tree.get(ino)

    def _require_tree_dir(self, ino: int) -> Node:
        node = self._require_tree_node(ino)
        if not node.is_dir:
            raise errors.NotADirectory(f"inode {ino} is not a directory")
        return node

    def _check_writable_inode(self, ino: int) -> None:
        """May this inode's content or attributes change? Decided by where it lives."""
        node = self.tree.nodes.get(ino)
        if node is not None and node.is_dir:
            self.policy.check_writable(ino)
            return
        where = self._where.get(ino)
        # A file's inode is known to the kernel only through a lookup, which recorded
        # its parent; without one, only the mount-wide rules apply.
        self.policy.check_writable(where[0] if where is not None else None)

    async def _submit_one(self, draft: Draft, chunks: dict[bytes, bytes] | None = None,
                          durable: bool = False) -> tuple[Event, Change | None]:
        """Namespace changes are safe from a crash once they return, and durable against
        power loss at the next fsync or close of a written file (like rename on ext4);
        contents are durable at close()."""
        [result] = await self.journal.submit([draft], chunks, durable)
        return result

    def _event_visible(self, event: Event) -> bool:
        """Agents do not see the events of other agents' memories."""
        if self.policy.agent is None or not event.path.startswith("memories/"):
            return True
        owner = event.path.split("/", 2)[1] if "/" in event.path else ""
        return owner in ("", "shared", self.policy.agent.decode())

    # ---- changes from the journal ------------------------------------------------------

    def _on_applied(self, event: Event, change: Change | None, local: bool) -> None:
        self.events_file.on_applied(event)
        if change is not None and event.type == events.MKNOD and event.payload.get("ino") in self._new_files:
            self._adopt(event.payload["ino"])
        if local or change is None:
            return
        for ino in change.inodes:
            open_file = self._open_files.get(ino)
            node = self.tree.nodes.get(ino)
            if open_file is not None and node is not None and not open_file.buffer.changed \
                    and not node.is_dir:
                open_file.buffer = self._committed_buffer(node)
        self.kernel.on_change(change)

    # ---- lookups and attributes ----------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        if len(name) > 255:
            raise errors.NameTooLong(f"name of {len(name)} bytes")
        if parent_inode == ROOT_INO:
            if name == b"events":
                return await self._events_attr()
            if name == b".lighthouse":
                return self._virtual_attr(CONTROL_INO, stat.S_IFDIR | 0o555)
        if parent_inode == CONTROL_INO:
            if name not in CONTROL_FILES:
                raise errors.NotFound(f".lighthouse/{name!r}")
            ino = CONTROL_FILES[name]
            return self._virtual_attr(ino, stat.S_IFREG | 0o444, len(self.control(name)), volatile=True)
        if parent_inode in self._hist_keys:
            return await self._history_lookup(parent_inode, name)
        if name == HISTORY_NAME and self.policy.is_project(parent_inode):
            key = ("H", parent_inode)
            return self._virtual_attr(self._hist_ref(key), stat.S_IFDIR | 0o555)
        self.policy.check_see(parent_inode, name)
        node = self.tree.find(parent_inode, name)
        if node is None:
            new = self._new_files.find(parent_inode, name)
            node = None if new is None else new.node
        if node is None:
            self.tree.get_dir(parent_inode)   # ENOENT / ENOTDIR for a bad parent
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = 0                     # a negative entry the kernel may cache
            attr.entry_timeout = CACHE_TIMEOUT
            return attr
        self._remember(node, parent_inode, name)
        return self._attr(node)

    async def forget(self, inode_list):
        for ino, count in inode_list:
            if ino >= FIRST_HISTORY_INO:
                self._hist_forget(ino, count)
            elif self.kernel.forget(ino, count):
                self.tree.release_orphan(ino)   # dropped if unlinked

    async def getattr(self, inode, ctx=None):
        return await self._attr_of(inode)

    async def _attr_of(self, inode: int) -> pyfuse3.EntryAttributes:
        """Attributes of any inode (tree, control, history); shared by getattr and readdir."""
        if inode == EVENTS_INO:
            return await self._events_attr()
        if inode == CONTROL_INO:
            return self._virtual_attr(CONTROL_INO, stat.S_IFDIR | 0o555)
        if inode in CONTROL_INOS:
            return self._virtual_attr(inode, stat.S_IFREG | 0o444, len(self.control(CONTROL_INOS[inode])),
                                      volatile=True)
        if inode in self._hist_keys:
            return await self._history_attr(inode)
        return self._attr(self._node(inode))

    async def _events_attr(self):
        await self.events_file.ensure_built()
        return self._virtual_attr(EVENTS_INO, stat.S_IFREG | 0o444, self.events_file.size, volatile=True)

    async def setattr(self, inode, attr, fields, fh, ctx):
        await self._settle(inode)
        node = self._require_tree_node(inode)
        self._check_writable_inode(inode)
        if fields.update_size:
            if not stat.S_ISREG(node.mode):
                raise errors.InvalidArgument("only regular files can be truncated")
            check_format_size(self._format_of(inode), attr.st_size)   # before the size changes
            handle = self._handles.get(fh) if fh is not None else None
            if isinstance(handle, FileHandle):
                # ftruncate and O_TRUNC: part of the open file's next commit at close.
                # The kernel leaves their times to us (it sends none, unlike truncate(2)).
                await handle.open_file.buffer.truncate(attr.st_size)
                handle.open_file.touched()
                handle.wrote = True
            else:
                await self._truncate_now(node, attr.st_size)
        payload = {}
        if fields.update_mode:
            payload["mode"] = attr.st_mode & 0o7777
        if fields.update_uid:
            payload["uid"] = attr.st_uid
        if fields.update_gid:
            payload["gid"] = attr.st_gid
        if fields.update_atime:
            payload["atime"] = attr.st_atime_ns
        if fields.update_mtime:
            payload["mtime"] = attr.st_mtime_ns
        if payload:
            payload["ino"] = inode
            draft = Draft(events.SETATTR, self._path_of(inode), payload)
            self.tree.check(draft)   # a time the store cannot hold: EINVAL
            await self._submit_one(draft)
            open_file = self._open_files.get(inode)
            if "mtime" in payload and open_file is not None and open_file.times is not None:
                # futimens before close (cp -p, rsync): the close commits this mtime.
                open_file.times = (payload["mtime"], self.tree.get(inode).ctime_ns)
        return self._attr(self.tree.get(inode))

    async def _truncate_now(self, node: Node, size: int) -> None:
        """truncate(2) by path: one write event now (the file may not be open at all)."""
        open_file = self._open_files.get(node.ino)
        buffer = open_file.buffer if open_file else self._committed_buffer(node)
        await buffer.truncate(size)
        await self._commit(node.ino, buffer, open_file)

    # ---- namespace changes -------------------------------------------------------------

    async def _make(self, parent: int, name: bytes, mode: int, ctx, target: bytes = b"", rdev: int = 0) -> Node:
        self._require_tree_dir(parent)
        self.policy.check_entry(parent, name, stat.S_ISDIR(mode))
        kind = self.policy.format_of(parent, name)
        if kind is not None:   # a state.json or status is a regular file, never an empty state.json
            if not stat.S_ISREG(mode):
                raise errors.InvalidArgument(f"{kind.decode()} must be a regular file")
            validate_format(kind, b"")
        payload = {"parent": parent, "name": name, "mode": mode, "uid": ctx.uid, "gid": ctx.gid}
        if target:
            payload["target"] = target
        if rdev:
            payload["rdev"] = rdev
        async with self._ns_lock:
            draft = Draft(events.MKNOD, self.tree.path(parent, name), payload)
            self._check_free(parent, name)
            self.tree.check(draft)
            event, change = await self._submit_one(draft)
        if change is None:
            raise errors.Exists(f"{draft.path} was created by another producer first")
        node = self.tree.get(events.ino_for_seq(event.seq))
        self._remember(node, parent, name)
        return node

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._attr(await self._make(parent_inode, name, stat.S_IFDIR | (mode & 0o7777), ctx))

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        # Device nodes are stored like any other node (type and rdev); the mount is
        # nodev (daemon.py), so the kernel never opens one as a device.
        if stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise errors.InvalidArgument(f"mknod of file type {stat.S_IFMT(mode):o}")
        return self._attr(await self._make(parent_inode, name, mode, ctx, rdev=rdev))

    async def symlink(self, parent_inode, name, target, ctx):
        return self._attr(await self._make(parent_inode, name, stat.S_IFLNK | 0o777, ctx, target=target))

    async def readlink(self, inode, ctx):
        node = await self._history_node(inode) if inode in self._hist_keys else self.tree.get(inode)
        if node is None or not stat.S_ISLNK(node.mode):
            raise errors.InvalidArgument("not a symbolic link")
        return node.target

    async def create(self, parent_inode, name, mode, flags, ctx):
        mode = stat.S_IFREG | (mode & 0o7777)
        # A state.json or status is never logged empty (an empty state.json is not JSON):
        # even with O_EXCL it enters the log at its first close, checked then. (O_EXCL
        # then excludes on this node only.)
        checked = self.policy.format_of(parent_inode, name) is not None
        if not self._may_defer(parent_inode, name):
            if checked:
                raise errors.StoreUnavailable(f"{self.tree.path(parent_inode, name)}: the store is failing, "
                                              "so the new file could not be stored")
            node = await self._make(parent_inode, name, mode, ctx)
        elif flags & os.O_EXCL and not checked:
            node = await self._make(parent_inode, name, mode, ctx)
        else:
            node = await self._make_new_file(parent_inode, name, mode, ctx)
        return self._open_tree_file(node, flags), self._attr(node)

    # ---- files created here, not yet in the log (newfiles.py) ----------------------------

    def _may_defer(self, parent: int, name: bytes) -> bool:
        """May this create wait for the file's first close to be logged? Only while the
        store is known to be reachable: else the create itself is logged, and fails where
        a shell sees it (bash ignores the errors of close)."""
        return self.journal.store_reachable() and not self.store.full

    def _check_reachable(self) -> None:
        """Content is accepted (write(), O_TRUNC) only while the store is known to be
        reachable: a shell that ignores close() sees the failure here instead."""
        if not self.journal.store_reachable():
            raise errors.StoreUnavailable("the store is not known to be reachable; refusing new content")
        full = self.store.full
        if full:
            raise errors.StoreFull(full)

    async def _make_new_file(self, parent: int, name: bytes, mode: int, ctx) -> Node:
        while True:
            # The checks run again after a reservation awaited the store; from the last
            # of them to add(), no await lets another change take the name.
            self._require_tree_dir(parent)
            self.policy.check_entry(parent, name, False)
            self._check_free(parent, name)
            self.tree.check(Draft(events.MKNOD, "", {"parent": parent, "name": name, "mode": mode}))
            ino = self._new_files.take_ino()
            if ino is not None:
                break
            await self._reserve_inodes()
        node = self._new_files.add(ino, parent, name, mode, ctx.uid, ctx.gid)
        self._remember(node, parent, name)
        return node

    async def _reserve_inodes(self) -> None:
        async with self._reserve_lock:
            if not self._new_files.used_up:
                return   # another create reserved while this one waited
            event, _ = await self._submit_one(Draft(events.INODES, "", {"count": events.INO_RANGE}))
            self._new_files.add_range(events.inode_range(event.seq))

    def _check_free(self, parent: int, name: bytes) -> None:
        """The tree's checks do not see files created here that are not logged yet."""
        if self._new_files.find(parent, name) is not None:
            raise errors.Exists(f"{self.tree.path(parent, name)} exists")

    async def _settle(self, ino: int) -> None:
        """Log a file created here now, before a change that the tree must check."""
        if ino in self._new_files:
            open_file = self._open_files[ino]
            await self._commit(ino, open_file.buffer, open_file)

    async def _settle_name(self, parent: int, name: bytes) -> None:
        """Log the new file of that name, or the new files in the directory of that
        name, before the name is removed or replaced (the tree would not see them)."""
        logged = self.tree.find(parent, name)
        new = self._new_files.find(parent, name)
        if new is not None and logged is None:
            # (If another node logged that name first, the change is about its file:
            # this one's conflict is for its own close to report.)
            await self._settle(new.node.ino)
        if logged is not None and logged.is_dir:
            for new in self._new_files.in_dir(logged.ino):
                await self._settle(new.node.ino)

    async def _log_new_file(self, new: NewFile, pending: Pending, times: dict[str, int]) -> None:
        """One MKNOD with the file's name, attributes, inode and content."""
        node = new.node
        draft = Draft(events.MKNOD, self.tree.path(new.parent, new.name),
                      {"parent": new.parent, "name": new.name, "mode": node.mode, "uid": node.uid,
                       "gid": node.gid, "ino": node.ino, "size": pending.size, "chunks": pending.hashes, **times})
        try:
            self.tree.check(draft)
        except (errors.Exists, errors.NotFound, errors.NotADirectory) as exc:
            self._abandon(new, str(exc))
            raise
        _, change = await self._submit_one(draft, pending.chunks, durable=True)
        if change is not None:
            return   # applied: _on_applied adopted the file
        if node.ino not in self._new_files:
            # An earlier append of this file, reported failed but stored, was applied
            # first (the outcome of a failed append is unknown): store this content on it.
            await self._submit_one(self._write_draft(node.ino, pending, times), pending.chunks, durable=True)
            return
        self._abandon(new, "another producer took the name first")
        raise errors.Exists(f"{draft.path} was created by another producer first")

    def _adopt(self, ino: int) -> None:
        """A new file's MKNOD was applied (by its close, or by the follower after an
        append that had been reported failed): from now on it is a tree node."""
        self._new_files.remove(ino)   # (the kernel's references are to the inode: kernel.py)

    def _abandon(self, new: NewFile, reason: str) -> None:
        """A file created here that cannot be logged disappears (the error went to close)."""
        log.warning("%s: the new file is dropped, its content was not stored: %s",
                    self.tree.path(new.parent, new.name), reason)
        self._new_files.remove(new.node.ino)
        new.node.nlink = 0
        open_file = self._open_files.get(new.node.ino)
        if open_file is not None:
            open_file.lost = errors.LighthouseError(
                f"{self.tree.path(new.parent, new.name)} was dropped before it was stored: {reason}",
                errno_=errno.ESTALE)
        self.kernel.drop(new.node.ino)
        self.kernel.invalidate_entry(new.parent, new.name)

    @staticmethod
    def _check_not_fixed(parent: int, name: bytes) -> None:
        """The root's events and .lighthouse are part of the layout, as its directories are."""
        if parent == ROOT_INO and name in (b"events", b".lighthouse"):
            raise errors.NotPermitted(f"{name.decode()} is part of the layout")

    async def _remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        self._require_tree_dir(parent)
        self._check_not_fixed(parent, name)
        if name == HISTORY_NAME and self.policy.is_project(parent):
            raise errors.ReadOnly(".history is read-only")
        self.policy.check_see(parent, name)
        await self._settle_name(parent, name)
        async with self._ns_lock:
            node = self.tree.child(parent, name)
            if want_dir and not node.is_dir:
                raise errors.NotADirectory(f"{self.tree.path(parent, name)} is not a directory")
            if not want_dir and node.is_dir:
                raise errors.IsADirectory(f"{self.tree.path(parent, name)} is a directory")
            self.policy.check_remove(parent, name)
            draft = Draft(events.UNLINK, self.tree.path(parent, name), {"parent": parent, "name": name})
            self.tree.check(draft)
            _, change = await self._submit_one(draft)
        if change is None:
            raise errors.NotFound(f"{draft.path} was removed by another producer first")

    async def unlink(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, want_dir=False)

    async def rmdir(self, parent_inode, name, ctx):
        await self._remove(parent_inode, name, want_dir=True)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        for parent in (parent_inode_old, parent_inode_new):
            self._require_tree_dir(parent)
        for parent, name in ((parent_inode_old, name_old), (parent_inode_new, name_new)):
            self._check_not_fixed(parent, name)
            if name == HISTORY_NAME and self.policy.is_project(parent):
                raise errors.ReadOnly(".history is read-only")
            self.policy.check_see(parent, name)
            await self._settle_name(parent, name)
        async with self._ns_lock:
            node = self.tree.child(parent_inode_old, name_old)
            self.policy.check_remove(parent_inode_old, name_old)
            self.policy.check_entry(parent_inode_new, name_new, node.is_dir)
            exchange = bool(flags & pyfuse3.RENAME_EXCHANGE)
            if exchange:
                other = self.tree.child(parent_inode_new, name_new)
                self.policy.check_entry(parent_inode_old, name_old, other.is_dir)
                await self._check_fits(parent_inode_old, name_old, other)
            await self._check_fits(parent_inode_new, name_new, node)
            payload = {"parent": parent_inode_old, "name": name_old,
                       "new_parent": parent_inode_new, "new_name": name_new}
            if exchange:
                payload["exchange"] = True
            if flags & pyfuse3.RENAME_NOREPLACE:
                payload["noreplace"] = True
            draft = Draft(events.RENAME, self.tree.path(parent_inode_old, name_old),
                          dict(payload, to=self.tree.path(parent_inode_new, name_new)))
            self.tree.check(draft)
            _, change = await self._submit_one(draft)
        if change is None:
            raise errors.NotFound(f"{draft.path} was changed by another producer first")
        self._where[node.ino] = (parent_inode_new, name_new)
        self._forget_formats(change)

    async def _check_fits(self, parent: int, name: bytes, node: Node) -> None:
        """`node` may become parent/name: a state.json or status there must fit its
        format, and so must those of a directory that becomes an agent's."""
        await self._check_format(self.policy.format_of(parent, name), node)
        if parent == AGENTS_INO and node.is_dir:
            for kind in (STATE_FILE, STATUS_FILE):
                if kind in node.entries:
                    await self._check_format(kind, self.tree.nodes[node.entries[kind]])

    async def _check_format(self, kind: bytes | None, node: Node) -> None:
        """A file that becomes agents/<a>/state.json or status must already fit the format."""
        if kind is None:
            return
        if not stat.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{kind.decode()} must be a regular file")
        open_file = self._open_files.get(node.ino)
        buffer = open_file.buffer if open_file else self._committed_buffer(node)
        check_format_size(kind, buffer.size)
        await self._validate(kind, await buffer.read(0, buffer.size))

    @staticmethod
    async def _validate(kind: bytes, data: bytes) -> None:
        if len(data) > LARGE_CHECK:
            await trio.to_thread.run_sync(validate_format, kind, data)
        else:
            validate_format(kind, data)

    def _forget_formats(self, change: Change | None) -> None:
        """Open files renamed or linked: their format is looked up again at their next write."""
        for ino in change.inodes if change is not None else ():
            open_file = self._open_files.get(ino)
            if open_file is not None:
                open_file.kind, open_file.check = UNKNOWN, None

    async def link(self, inode, new_parent_inode, new_name, ctx):
        await self._settle(inode)
        node = self._require_tree_node(inode)
        self._require_tree_dir(new_parent_inode)
        self.policy.check_entry(new_parent_inode, new_name, node.is_dir)
        await self._check_format(self.policy.format_of(new_parent_inode, new_name), node)
        async with self._ns_lock:
            draft = Draft(events.LINK, self.tree.path(new_parent_inode, new_name),
                          {"ino": inode, "parent": new_parent_inode, "name": new_name})
            self._check_free(new_parent_inode, new_name)
            self.tree.check(draft)
            _, change = await self._submit_one(draft)
        if change is None:
            raise errors.NotFound(f"inode {inode} was removed by another producer first")
        self._forget_formats(change)
        node = self.tree.get(inode)
        self._remember(node, new_parent_inode, new_name)
        return self._attr(node)

    # ---- file contents -------------------------------------------------------------------

    def _open_tree_file(self, node: Node, flags: int) -> pyfuse3.FileInfo:
        open_file = self._open_files.get(node.ino)
        if open_file is None:
            open_file = OpenFile(node.ino, self._committed_buffer(node))
            self._open_files[node.ino] = open_file
        open_file.refs += 1
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        # The kernel may keep this file's pages across opens: every change made
        # elsewhere invalidates them (_on_applied), and local writes pass through them.
        handle = FileHandle(open_file, writable, bool(flags & os.O_APPEND))
        return pyfuse3.FileInfo(fh=self._new_fh(handle), keep_cache=True)

    async def open(self, inode, flags, ctx):
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        if inode == EVENTS_INO or inode in CONTROL_INOS or inode in self._hist_keys:
            if writing:
                if inode in self._hist_keys:
                    raise errors.ReadOnly(".history is read-only")
                raise errors.PermissionDenied("the control files are read-only")
            if inode == EVENTS_INO:
                await self.events_file.ensure_built()
                return pyfuse3.FileInfo(fh=self._new_fh(EventsHandle()), direct_io=True, keep_cache=False)
            if inode in CONTROL_INOS:
                data = self.control(CONTROL_INOS[inode])
                return pyfuse3.FileInfo(fh=self._new_fh(BytesHandle(data)), direct_io=True, keep_cache=False)
            node = await self._history_node(inode)
            if node is None or not stat.S_ISREG(node.mode):
                raise errors.InvalidArgument("not a regular file")
            buffer = self._committed_buffer(node)
            return pyfuse3.FileInfo(fh=self._new_fh(ReadOnlyFile(buffer)), keep_cache=True)
        node = self._node(inode)
        if node.is_dir:
            raise errors.IsADirectory("is a directory")
        if writing:
            self._check_writable_inode(inode)
            if flags & os.O_TRUNC:
                self._check_reachable()
        info = self._open_tree_file(node, flags)
        if flags & os.O_TRUNC and writing:
            # libfuse enables atomic O_TRUNC: the kernel sends no separate truncate.
            handle = self._handles[info.fh]
            await handle.open_file.buffer.truncate(0)
            handle.open_file.touched()
            handle.truncated = True
        return info

    async def read(self, fh, off, size):
        handle = self._handles[fh]
        if isinstance(handle, FileHandle):
            return await handle.open_file.buffer.read(off, size)
        if isinstance(handle, ReadOnlyFile):
            return await handle.buffer.read(off, size)
        if isinstance(handle, BytesHandle):
            return handle.data[off:off + size]
        return await self.events_file.read(off, size)

    async def write(self, fh, off, buf):
        handle = self._handles[fh]
        if not isinstance(handle, FileHandle) or not handle.writable:
            raise errors.PermissionDenied("file not open for writing")
        if handle.open_file.lost is not None:
            raise handle.open_file.lost
        if handle.refused is not None:
            raise pyfuse3.FUSEError(handle.refused.errno)   # logged once, when it was refused
        self._check_reachable()
        open_file = handle.open_file
        if open_file.kind is UNKNOWN:
            open_file.kind = self._format_of(open_file.ino)
        if open_file.kind is not None:
            await self._check_write(handle, open_file.buffer.size if handle.append else off, buf)
        while True:
            buffer = open_file.buffer
            if handle.append:
                # The kernel's offset is its cached size, stale if another node appended:
                # the end is where this daemon's buffer ends, and the kernel must forget
                # the size and the pages it wrote at its own offset.
                if off != buffer.size:
                    open_file.kernel_stale = True
                    self._invalidate_later(open_file.ino)
                written = await buffer.append(buf)
            else:
                written = await buffer.write(off, buf)
            if open_file.buffer is buffer:
                break
            # Another node's change replaced the unchanged buffer while this write
            # awaited a chunk (_on_applied): the write goes to the new one.
        if open_file.check is not None:
            open_file.check_mark = (open_file.buffer, open_file.buffer.generation)
        if written:
            open_file.touched()
        handle.wrote = True
        return written   # (short only at the largest file, as on ext4)

    def _format_of(self, ino: int) -> bytes | None:
        new = self._new_files.get(ino)
        if new is not None:
            return self.policy.format_of(new.parent, new.name)
        return self.policy.format_of_inode(ino)

    def _name_of(self, ino: int) -> str:
        new = self._new_files.get(ino)
        return self.tree.path(new.parent, new.name) if new is not None else self._path_of(ino)

    async def _check_write(self, handle: FileHandle, off: int, buf: bytes) -> None:
        """Refuse (EINVAL) a write to a state.json or status as soon as the file's bytes
        cannot begin a valid one: a shell sees the error of write(), never that of
        close(). A write at the end continues the check of the bytes before it; any
        other write checks the file as it will be, from its start. (The kernel sends one
        write at a time per inode: none comes between this check and its write.)"""
        open_file = handle.open_file
        buffer, check = open_file.buffer, open_file.check
        try:
            check_format_size(open_file.kind, max(buffer.size, off + len(buf)))
            if check is not None and open_file.check_mark == (buffer, buffer.generation) \
                    and off == check.fed == buffer.size:
                data = buf
            else:
                check = FormatCheck(open_file.kind)
                old = await buffer.read(0, buffer.size)
                data = old[:off].ljust(off, b"\0") + buf + old[off + len(buf):]
            open_file.check = None
            if len(data) > LARGE_CHECK:
                await trio.to_thread.run_sync(check.feed, data)
            else:
                check.feed(data)
        except CONTENT_REFUSALS as exc:
            handle.refused = type(exc)(f"{self._name_of(open_file.ino)}: {exc}")
            self._revert(open_file)
            raise handle.refused from None
        open_file.check = check

    def _revert(self, open_file: OpenFile, failed: errors.LighthouseError | None = None) -> None:
        """Refused content (or content whose commit `failed`: an error from close() means
        "not stored", so no later commit may store it) leaves the stored content, for
        every handle: the open buffer goes back to it (a new file's is empty), and the
        kernel drops what it cached of the discarded bytes."""
        node = self._live_node(open_file.ino)
        if node is not None:
            open_file.buffer = self._committed_buffer(node)
        open_file.check = None
        open_file.times = None
        open_file.kernel_stale = True   # dropped at once, and for sure before the close answers
        self._invalidate_later(open_file.ino)
        # Every other handle's unstored writes went with it: their writes, closes and
        # fsyncs say so from now on, instead of a close that answers 0 for lost bytes.
        why = "a write through another one was refused" if failed is None else f"its commit failed ({failed})"
        lost = (errors.InvalidArgument if failed is None else errors.LighthouseError)(
            f"{self._name_of(open_file.ino)}: what this descriptor wrote was discarded: {why}")
        for other in self._handles.values():
            if isinstance(other, FileHandle) and other.open_file is open_file and other.refused is None \
                    and (other.wrote or other.truncated):
                other.refused = lost

    async def flush(self, fh):
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            return
        open_file = handle.open_file
        if handle.refused is not None:
            await self._drop_stale_pages(open_file)
            raise pyfuse3.FUSEError(handle.refused.errno)   # what it wrote was not stored
        # Only a handle that wrote (or ftruncated) since its last commit commits here: a
        # reader's close does not log another handle's unfinished writes, and bash closes
        # the descriptor it dup'd before it writes. An O_TRUNC or a new file that nothing
        # was written to is committed by the release.
        if handle.writable and handle.wrote and (open_file.buffer.changed or open_file.ino in self._new_files):
            handle.wrote = handle.truncated = False
            try:
                await self._commit(open_file.ino, open_file.buffer, open_file)
            except CONTENT_REFUSALS as exc:
                handle.refused = exc   # _commit put the stored content back
                await self._drop_stale_pages(open_file)
                raise
            except errors.LighthouseError as exc:
                handle.flush_failed = True
                if open_file.buffer.changed and open_file.lost is None:
                    # Not stored, so never stored later by another handle's close.
                    self._revert(open_file, exc)
                    await self._drop_stale_pages(open_file)
                raise
            handle.flush_failed = False

    async def fsync(self, fh, datasync):
        handle = self._handles.get(fh)
        if isinstance(handle, FileHandle) and handle.open_file.lost is not None:
            raise handle.open_file.lost
        if isinstance(handle, FileHandle) and handle.refused is not None:
            await self._drop_stale_pages(handle.open_file)
            raise pyfuse3.FUSEError(handle.refused.errno)
        if isinstance(handle, FileHandle) and self._commits_for(handle) and (
                handle.open_file.buffer.changed or handle.open_file.ino in self._new_files):
            try:
                await self._commit(handle.open_file.ino, handle.open_file.buffer, handle.open_file)
            except CONTENT_REFUSALS as exc:
                handle.refused = exc
                await self._drop_stale_pages(handle.open_file)
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

    async def release(self, fh):
        handle = self._handles.pop(fh, None)
        if not isinstance(handle, FileHandle):
            return
        open_file = handle.open_file
        try:
            # A new file opened without write access (O_RDONLY|O_CREAT) is logged when
            # its last handle closes; one a writer closed is logged by then.
            if handle.refused is None and not handle.flush_failed and (
                    (open_file.buffer.changed and handle.writable and self._commits_for(handle))
                    or (open_file.ino in self._new_files and open_file.refs == 1)):
                await self._commit(open_file.ino, open_file.buffer, open_file)
        finally:
            open_file.refs -= 1
            if open_file.refs == 0:
                new = self._new_files.get(open_file.ino)
                if new is not None:
                    async with new.lock:   # after a rename or fsync logging it right now
                        if open_file.ino in self._new_files:
                            self._abandon(new, "it was closed without being stored (see the error of its close)")
                del self._open_files[open_file.ino]
                self.tree.release_orphan(open_file.ino)   # dropped if unlinked and not looked up

    async def _commit(self, ino: int, buffer: FileBuffer, open_file: OpenFile | None) -> None:
        """One close() of a written file: one event, durable when this returns. The
        commits of an open file take turns, and one that finds everything stored by the
        one before has nothing to do (a close racing a rename that logs the new file
        first would otherwise find it logged but not yet marked stored, and store it twice)."""
        if open_file is None:
            await self._commit_now(ino, buffer, None)
            return
        async with open_file.committing:
            if buffer.changed or ino in self._new_files or open_file.lost is not None:
                await self._commit_now(ino, buffer, open_file)

    async def _commit_now(self, ino: int, buffer: FileBuffer, open_file: OpenFile | None) -> None:
        new = self._new_files.get(ino)
        if new is not None:
            async with new.lock:
                if ino in self._new_files:
                    await self._check_content(ino, self.policy.format_of(new.parent, new.name), buffer, open_file)
                    await self._store_content(buffer, new, open_file)
                    return
        if open_file is not None and open_file.lost is not None:
            raise open_file.lost   # e.g. the close that held the lock dropped the file
        if new is not None and not buffer.changed:
            return   # the close that logged the file stored all of it
        node = self.tree.nodes.get(ino)
        if node is None or node.nlink == 0:
            return  # unlinked while open: nothing visible changes, nothing to store
        kind = self.policy.format_of_inode(ino)
        await self._check_content(ino, kind, buffer, open_file)
        if kind is None and open_file is not None and buffer.appends_only:
            # (Under open_file.committing, held by _commit: one commit of appends at a
            # time, each knowing the content it appends to.)
            await self._store_appends(buffer, open_file)
            await self._drop_stale_pages(open_file)
            return
        await self._store_content(buffer, ino, open_file)

    async def _drop_stale_pages(self, open_file: OpenFile) -> None:
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
            await self._validate(kind, await buffer.read(0, buffer.size))
        except CONTENT_REFUSALS as exc:
            if open_file is not None:
                self._revert(open_file)
            raise type(exc)(f"{self._name_of(ino)}: {exc}") from None

    def _pending_times(self, open_file: OpenFile | None, node: Node | None) -> dict[str, int]:
        """The times an open file's uncommitted changes gave it, for stat and its commit
        ({} if none: the commit's event time stands)."""
        if open_file is None or open_file.times is None:
            return {}
        mtime, ctime = open_file.times
        # A chmod since then moved ctime on; it never goes back.
        return {"mtime": mtime, "ctime": max(ctime, node.ctime_ns) if node is not None else ctime}

    def _write_draft(self, ino: int, pending: Pending, times: dict[str, int] | None = None,
                     base: bytes | None = None) -> Draft:
        payload = {"ino": ino, "size": pending.size, "chunks": pending.hashes, **(times or {})}
        if base is not None:
            payload["base"] = base
        return Draft(events.WRITE, self._path_of(ino), payload)

    async def _store_content(self, buffer: FileBuffer, target: int | NewFile,
                             open_file: OpenFile | None = None, append: bool = False) -> bool:
        """Store the buffer: a write event on inode `target`, or the MKNOD of a new file,
        with the times its changes gave it. With `append`, the event of an append is
        conditional (see _store_appends) and False means it was skipped: nothing was stored."""
        stamped = open_file.times if open_file is not None else None
        node = target.node if isinstance(target, NewFile) else self.tree.nodes.get(target)
        times = self._pending_times(open_file, node)
        pending = buffer.snapshot()
        if buffer.dirty_bytes() > LARGE_COMMIT or len(buffer.chunks) > LARGE_CHUNK_LIST:
            await trio.to_thread.run_sync(pending.seal)
        else:
            pending.seal()
        if isinstance(target, NewFile):
            await self._log_new_file(target, pending, times)
        else:
            base = pending.base if append else None
            _, change = await self._submit_one(self._write_draft(target, pending, times, base), pending.chunks,
                                               durable=True)
            if change is None and base is not None:
                return False
        buffer.mark_committed(pending)
        if open_file is not None and open_file.times is stamped:
            open_file.times = None   # stored; (a change made meanwhile stays for the next commit)
        self._chunks.put_fresh(pending.chunks)
        return True

    async def _store_appends(self, buffer: FileBuffer, open_file: OpenFile) -> None:
        """Store what only O_APPEND handles changed since the buffer's base: its event
        names the content it was made on, and every node skips it if the file's content
        has changed meanwhile. The appended bytes then go after the file's content as it
        is now, and the event is tried again; each round skipped is one in which another
        producer's write of the file landed."""
        ino = open_file.ino
        for _ in range(APPEND_ROUNDS):
            if not await self._rebase_appends(buffer, open_file):
                return   # unlinked on every node meanwhile: nothing visible changes
            if await self._store_content(buffer, ino, open_file, append=True):
                return
        raise errors.LighthouseError(f"{self._path_of(ino)}: not stored, the file was written by others "
                                     f"{APPEND_ROUNDS} times while this append was tried")

    async def _rebase_appends(self, buffer: FileBuffer, open_file: OpenFile) -> bool:
        """Appends made on content that has been replaced since go after the file's
        content as it is now (see _store_appends). False if the file is gone."""
        node = self.tree.nodes.get(open_file.ino)
        if node is None or node.nlink == 0:
            return False
        if buffer.appends_only and buffer.base != content_digest(node.size, node.chunks):
            await buffer.rebase(node.chunks, node.size)
            open_file.kernel_stale = True   # its pages hold the appends where they were
        return True

    # ---- directories ---------------------------------------------------------------------

    async def opendir(self, inode, ctx):
        if inode == CONTROL_INO:
            entries = [(name, ino) for name, ino in CONTROL_FILES.items()]
        elif inode in self._hist_keys:
            return self._new_fh(HistoryListing(await self._history_listing(inode)))
        else:
            directory = self.tree.get_dir(inode)
            entries = self.policy.visible_entries(inode, directory.entries)
            entries += [(name, ino) for name, ino in self._new_files.names_in(inode)
                        if name not in directory.entries]
            if inode == ROOT_INO:
                entries += [(b"events", EVENTS_INO), (b".lighthouse", CONTROL_INO)]
            # A project's .history is reachable by name but not listed (like ZFS's hidden
            # .zfs): cp -r, rm -r, find and grep -r would otherwise walk every past version.
        return self._new_fh(entries)

    async def readdir(self, fh, start_id, token):
        entries = self._handles[fh]
        if isinstance(entries, HistoryListing):
            return await self._history_readdir(entries, start_id, token)
        nodes, attrs, lookups = self.tree.nodes, self._attrs, self.kernel.lookups
        # The hot loop of ls, find and git status: tree entries take the direct path
        # (no await, and the reused attributes without a call); only virtual inodes
        # take _attr_of.
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            node = nodes.get(ino) or self._new_files.node(ino)
            if node is not None:
                cached = attrs.get(ino)
                if cached is not None and cached[0] == node.version and ino not in self._open_files:
                    attr = cached[1]
                else:
                    attr = self._attr(node)
            elif events.INO_BASE <= ino < FIRST_HISTORY_INO:
                continue   # removed since opendir
            else:
                try:
                    attr = await self._attr_of(ino)
                except errors.NotFound:
                    continue
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                return
            # readdirplus hands the kernel a reference, as a lookup does (_remember, inline).
            if node is not None and ino >= events.INO_BASE:
                lookups[ino] = lookups.get(ino, 0) + 1

    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        await self.journal.sync()

    async def statfs(self, ctx):
        usage = await self.journal.call_store(self.store.usage)
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        used = usage["used_bytes"] // 4096
        free = usage["free_bytes"] // 4096
        out.f_blocks = used + free
        out.f_bfree = out.f_bavail = free
        out.f_files = len(self.tree.nodes) + 1_000_000
        out.f_ffree = out.f_favail = 1_000_000
        out.f_namemax = 255
        return out

    async def access(self, inode, mode, ctx):
        return True   # default_permissions: the kernel checks mode bits itself

    # ---- extended attributes -------------------------------------------------------------

    @staticmethod
    def _check_xattr_name(name: bytes) -> None:
        if not name.startswith(b"user."):
            raise errors.LighthouseError("only user.* attributes are supported", errno_=errno.EOPNOTSUPP)

    async def setxattr(self, inode, name, value, ctx):
        self._check_xattr_name(name)
        if len(value) > XATTR_VALUE_MAX:
            raise errors.LighthouseError(f"attribute value over {XATTR_VALUE_MAX} bytes", errno_=errno.E2BIG)
        await self._settle(inode)
        self._require_tree_node(inode)
        self._check_writable_inode(inode)
        draft = Draft(events.SETXATTR, self._path_of(inode), {"ino": inode, "name": name, "value": value})
        self.tree.check(draft)   # the total of the file's attributes (ENOSPC)
        await self._submit_one(draft)

    async def getxattr(self, inode, name, ctx):
        node = await self._history_node(inode) if inode in self._hist_keys else self._live_node(inode)
        if node is None or not node.xattrs or name not in node.xattrs:
            raise errors.NoAttribute(f"no attribute {name!r}")
        return node.xattrs[name]

    async def listxattr(self, inode, ctx):
        node = await self._history_node(inode) if inode in self._hist_keys else self._live_node(inode)
        return list(node.xattrs) if node is not None and node.xattrs else []

    async def removexattr(self, inode, name, ctx):
        self._check_xattr_name(name)
        await self._settle(inode)
        self._require_tree_node(inode)
        self._check_writable_inode(inode)
        draft = Draft(events.REMOVEXATTR, self._path_of(inode), {"ino": inode, "name": name})
        self.tree.check(draft)
        await self._submit_one(draft)

    # ---- history -------------------------------------------------------------------------

    def _hist_ref(self, key: tuple) -> int:
        """The inode number of a .history entry, counting the reference the kernel takes
        with it: call it only for an entry the kernel is about to be given."""
        ino = self._hist_inos.get(key)
        if ino is None:
            ino = next(self._next_hist_ino)
            self._hist_inos[key] = ino
            self._hist_keys[ino] = key
        self._hist_lookups[ino] = self._hist_lookups.get(ino, 0) + 1
        return ino

    def _hist_forget(self, ino: int, count: int) -> None:
        left = self._hist_lookups.get(ino, 0) - count
        if left > 0:
            self._hist_lookups[ino] = left
            return
        self._hist_lookups.pop(ino, None)
        key = self._hist_keys.pop(ino, None)
        if key is not None:
            del self._hist_inos[key]

    async def _history_readdir(self, entries: HistoryListing, start_id: int, token) -> None:
        for index in range(start_id, len(entries)):
            name, key = entries[index]
            try:
                attr = await self._history_attr(None, key)
            except errors.NotFound:
                continue
            attr.st_ino = ino = self._hist_ref(key)
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                self._hist_forget(ino, 1)   # not given to the kernel after all
                return

    def _project_path(self, project_ino: int) -> str:
        return self.tree.dir_path(project_ino)

    async def _history_version_root(self, project_ino: int, seq: int) -> Node | None:
        """The project directory as it was just after event `seq`."""
        tree = await self.history.tree_at(seq)
        node = tree.nodes.get(project_ino)
        if node is None or not node.is_dir:
            try:
                node = tree.resolve(self._project_path(project_ino))
            except errors.LighthouseError:
                return None
        return node

    async def _history_node(self, ino: int) -> Node | None:
        """The past node a .history inode names (None for the version directories)."""
        key = self._hist_keys.get(ino)
        if key is None or key[0] != "N":
            return None
        return (await self.history.tree_at(key[1])).nodes.get(key[2])

    async def _history_attr(self, ino: int | None, key: tuple | None = None):
        """Attributes of a .history inode (`ino` None: of the entry `key`, not numbered yet)."""
        key = key or self._hist_keys[ino]
        if key[0] in ("H", "V"):
            return self._virtual_attr(ino or 0, stat.S_IFDIR | 0o555)
        tree = await self.history.tree_at(key[1])
        node = tree.nodes.get(key[2])
        if node is None:
            raise errors.NotFound(f".history: inode {key[2]} at {key[1]}")
        return self._build_attr(node, ino=ino or 0, read_only=True)

    async def _history_lookup(self, parent: int, name: bytes):
        key = self._hist_keys[parent]
        if key[0] == "H":
            if not name.isdigit():
                raise errors.NotFound(f".history/{name!r}: versions are event numbers")
            seq = int(name)
            if seq not in await self.history.versions(self._project_path(key[1])):
                raise errors.NotFound(f".history/{seq}: no event of this project has that number")
            return self._virtual_attr(self._hist_ref(("V", key[1], seq)), stat.S_IFDIR | 0o555)
        seq, directory = await self._history_directory(key)
        child_ino = directory.entries.get(name) if directory is not None and directory.is_dir else None
        if child_ino is None:
            raise errors.NotFound(f".history/{seq}: no entry {name!r}")
        tree = await self.history.tree_at(seq)
        return self._build_attr(tree.nodes[child_ino], ino=self._hist_ref(("N", seq, child_ino)), read_only=True)

    async def _history_directory(self, key: tuple) -> tuple[int, Node | None]:
        """(version, directory node) of a version root ("V") or a past directory ("N")."""
        if key[0] == "V":
            return key[2], await self._history_version_root(key[1], key[2])
        return key[1], (await self.history.tree_at(key[1])).nodes.get(key[2])

    async def _history_listing(self, ino: int) -> list[tuple[bytes, tuple]]:
        key = self._hist_keys[ino]
        if key[0] == "H":
            seqs = await self.history.versions(self._project_path(key[1]))
            return [(str(seq).encode(), ("V", key[1], seq)) for seq in seqs]
        seq, directory = await self._history_directory(key)
        if directory is None or not directory.is_dir:
            return []
        return [(name, ("N", seq, child)) for name, child in directory.entries.items()]


_HANDLER_NAMES = guard(LighthouseOperations)
