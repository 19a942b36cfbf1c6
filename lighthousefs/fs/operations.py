"""The pyfuse3 Operations: FUSE requests in, tree queries and journal submissions out.

The handlers delegate: open and new files and their commits to files/writer.py, the
kernel's references and invalidation to kernel.py, attributes to attrs.py, `.history`
to views/history_dir.py. Errors are translated at one boundary (boundary.py): domain
errors become their errno, anything unexpected is logged with its traceback and
answered with EIO. Handlers do no blocking I/O on the trio thread: the store is reached
through the journal, the history and the events file, which use worker threads.

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
import logging
import os
import stat
import time
from typing import Callable

import pyfuse3
import trio

from .. import errors
from ..domain import events, rules
from ..domain.events import Draft, Event
from ..domain.rules import FormatCheck, Policy, check_format_size
from ..domain.tree import ROOT_INO, Change, Node
from ..domain.visibility import view_of
from ..engine.journal import Journal
from ..files.chunk_cache import ChunkCache, Chunks
from ..files.commits import pending_times
from ..files.handles import UNKNOWN, BytesHandle, EventsHandle, FileHandle, Handles, OpenFile, ReadOnlyFile
from ..files.writer import CONTENT_REFUSALS, LARGE_CHECK, Writer, validate
from ..metrics import Metrics
from ..views.events_file import EventsFile
from ..views.history import History
from ..views.history_dir import FIRST_HISTORY_INO, HISTORY_NAME, HistoryListing, HistoryView
from .attrs import CACHE_TIMEOUT, Attrs
from .boundary import guard
from .kernel import Kernel

log = logging.getLogger(__name__)

EVENTS_INO = 6
CONTROL_INO = 7
CONTROL_FILES = {b"stats": 8, b"health": 9, b"version": 10}
CONTROL_INOS = {ino: name for name, ino in CONTROL_FILES.items()}
CHUNK_CACHE_BYTES = 64 << 20
XATTR_VALUE_MAX = 64 * 1024


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
        self.actor = journal.actor   # the agent (or the operator) every change is checked for
        self.control = control
        self.metrics = metrics
        self._op_timers = {name: metrics.op_seconds.labels(name).observe for name in _HANDLER_NAMES}
        cache = ChunkCache(cache_bytes, on_hit=metrics.cache.labels("l1", "hit").inc,
                           on_miss=metrics.cache.labels("l1", "miss").inc)
        metrics.cache_bytes.set_function(lambda: cache.bytes)
        self.history = History(journal.guarded)
        metrics.history_trees.set_function(lambda: self.history.trees_kept)
        metrics.history_tree_inodes.set_function(lambda: self.history.inodes_kept)
        metrics.history_inodes.set_function(lambda: len(self._hist_keys))
        self.events_file = EventsFile(journal.guarded, self._event_view,
                                      lambda: self.tree.applied_seq)
        self._ns_lock = trio.Lock()
        self.kernel = Kernel(self.tree, lambda ino: ino in self.writer.open_files)
        self._handles = Handles()
        chunks = Chunks(cache, self.store, journal.call_store, self.kernel.path_of)
        self.writer = Writer(journal, chunks, self.kernel, self._handles, self._format_of, self.kernel.path_of)
        metrics.new_files.set_function(lambda: len(self.writer.new_files))
        self.attrs = Attrs(self.tree, self.writer.open_files, pending_times)
        # The names the handlers use, bound to their owners above (the namespace handlers
        # are being reworked in parallel: their bodies stay as they were).
        writer, kernel, attrs = self.writer, self.kernel, self.attrs
        self._open_files, self._new_files, self._new_fh = writer.open_files, writer.new_files, self._handles.add
        self._live_node, self._committed_buffer, self._submit_one = \
            writer.live_node, writer.committed_buffer, writer.commits.submit_one
        self._settle, self._settle_name, self._check_free = writer.settle, writer.settle_name, writer.check_free
        self._may_defer, self._check_reachable = writer.may_defer, writer.check_reachable
        self._forget_formats, self._name_of, self._revert = writer.forget_formats, writer.name_of, writer.revert
        self._remember, self._where, self._path_of = kernel.remember, kernel.where, kernel.path_of
        self._attr, self._attrs, self._virtual_attr = attrs.attr, attrs.cache, attrs.virtual_attr
        self._build_attr, self._truncate_now = attrs.build_attr, writer.truncate_now
        hist = self.history_view = HistoryView(self.history, self.tree, attrs, self._viewer)
        self._hist_keys, self._hist_ref, self._hist_forget = hist._hist_keys, hist._hist_ref, hist._hist_forget
        self._history_lookup, self._history_attr, self._history_node = \
            hist._history_lookup, hist._history_attr, hist._history_node
        self._history_listing, self._history_readdir = hist._history_listing, hist._history_readdir
        journal.listeners.append(self._on_applied)

    @property
    def kernel_inodes(self) -> int:
        return self.kernel.inodes

    # ---- helpers ---------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self._live_node(ino)
        if node is None:
            raise errors.NotFound(f"no inode {ino}")
        return node

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
        """May this inode's content or attributes change? Decided by where the node is
        now (rules.area_of), never by the path the kernel reached it by."""
        self.policy.check_mount_writable()
        new = self._new_files.get(ino)
        if new is not None:   # not in the tree yet: where its name was taken
            rules.check_change(self.tree, self.actor, rules.area_root(self.tree, new.parent),
                               lambda: self._name_of(ino))
            return
        node = self.tree.nodes.get(ino)
        if node is not None:
            rules.check_node_change(self.tree, self.actor, node)

    def _event_view(self, event: Event) -> Event | None:
        """What this mount's agent may see of an event (visibility.py)."""
        return view_of(event, self._viewer)

    @property
    def _viewer(self) -> str | None:
        return self.policy.agent.decode() if self.policy.agent else None

    # ---- changes from the journal ------------------------------------------------------

    def _on_applied(self, event: Event, change: Change | None, local: bool) -> None:
        self.events_file.on_applied(event)
        self.writer.on_applied(event, change, local)
        if not local and change is not None:
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
            if node.nlink == 0:   # open but unlinked: this kernel's file only (Tree.change_unlinked)
                self.tree.change_unlinked(draft, time.time_ns())
            else:
                await self._submit_one(draft)
            open_file = self._open_files.get(inode)
            if "mtime" in payload and open_file is not None and open_file.times is not None:
                # futimens before close (cp -p, rsync): the close commits this mtime.
                open_file.times = (payload["mtime"], self.tree.get(inode).ctime_ns)
        return self._attr(self.tree.get(inode))

    # ---- namespace changes -------------------------------------------------------------

    async def _make(self, parent: int, name: bytes, mode: int, ctx, target: bytes = b"", rdev: int = 0) -> Node:
        self._require_tree_dir(parent)
        self.policy.check_mount_writable()
        payload = {"parent": parent, "name": name, "mode": mode, "uid": ctx.uid, "gid": ctx.gid}
        if target:
            payload["target"] = target
        if rdev:
            payload["rdev"] = rdev
        async with self._ns_lock:
            draft = Draft(events.MKNOD, self.tree.path(parent, name), payload, self.actor)
            self._check_free(parent, name)
            self.tree.check(draft)   # the layout, the area's rights, a state.json that is not a file
            rules.check_content(self.tree, draft, b"")   # never an empty state.json
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

    async def _make_new_file(self, parent: int, name: bytes, mode: int, ctx) -> Node:
        def check() -> None:
            # Run again after a reservation awaited the store (see Writer.make_new_file).
            self._require_tree_dir(parent)
            self.policy.check_mount_writable()
            self._check_free(parent, name)
            self.tree.check(Draft(events.MKNOD, "", {"parent": parent, "name": name, "mode": mode}, self.actor))
        node = await self.writer.make_new_file(parent, name, mode, ctx.uid, ctx.gid, check)
        self._remember(node, parent, name)   # (no await since the name was taken)
        return node

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
            self.policy.check_mount_writable()
            draft = Draft(events.UNLINK, self.tree.path(parent, name), {"parent": parent, "name": name}, self.actor)
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
            self.policy.check_mount_writable()
            node = self.tree.child(parent_inode_old, name_old)
            exchange = bool(flags & pyfuse3.RENAME_EXCHANGE)
            payload = {"parent": parent_inode_old, "name": name_old,
                       "new_parent": parent_inode_new, "new_name": name_new}
            if exchange:
                payload["exchange"] = True
            if flags & pyfuse3.RENAME_NOREPLACE:
                payload["noreplace"] = True
            draft = Draft(events.RENAME, self.tree.path(parent_inode_old, name_old),
                          dict(payload, to=self.tree.path(parent_inode_new, name_new)), self.actor)
            self.tree.check(draft)   # rights, layout and areas (EXDEV) before any content is read
            if exchange:
                await self._check_fits(parent_inode_old, name_old, self.tree.child(parent_inode_new, name_new))
            await self._check_fits(parent_inode_new, name_new, node)
            self.tree.check(draft)   # again: the checks of content awaited
            _, change = await self._submit_one(draft)
        if change is None:
            raise errors.NotFound(f"{draft.path} was changed by another producer first")
        self._where[node.ino] = (parent_inode_new, name_new)
        self._forget_formats(change)

    async def _check_fits(self, parent: int, name: bytes, node: Node) -> None:
        """`node` may become parent/name: a state.json or status there must fit its
        format. (No directory becomes an agent's: area roots are never renamed.)"""
        await self._check_format(self.policy.format_of(parent, name), node)

    _validate = staticmethod(validate)

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

    async def link(self, inode, new_parent_inode, new_name, ctx):
        await self._settle(inode)
        node = self._require_tree_node(inode)
        self._require_tree_dir(new_parent_inode)
        self.policy.check_mount_writable()
        draft = Draft(events.LINK, self.tree.path(new_parent_inode, new_name),
                      {"ino": inode, "parent": new_parent_inode, "name": new_name}, self.actor)
        self.tree.check(draft)   # rights, layout and areas (EXDEV) before any content is read
        await self._check_format(self.policy.format_of(new_parent_inode, new_name), node)
        async with self._ns_lock:
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
        return await self.writer.write(handle, off, buf)

    def _format_of(self, ino: int) -> bytes | None:
        new = self._new_files.get(ino)
        if new is not None:
            return self.policy.format_of(new.parent, new.name)
        return self.policy.format_of_inode(ino)

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

    async def flush(self, fh):
        await self.writer.flush(self._handles.get(fh))

    async def fsync(self, fh, datasync):
        await self.writer.fsync(self._handles.get(fh))

    async def release(self, fh):
        await self.writer.release(self._handles.pop(fh, None))

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
        node = self._require_tree_node(inode)
        self._check_writable_inode(inode)
        draft = Draft(events.SETXATTR, self._path_of(inode), {"ino": inode, "name": name, "value": value})
        self.tree.check(draft)   # the total of the file's attributes (ENOSPC)
        if node.nlink == 0:   # open but unlinked: this kernel's file only (Tree.change_unlinked)
            self.tree.change_unlinked(draft, time.time_ns())
        else:
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
        node = self._require_tree_node(inode)
        self._check_writable_inode(inode)
        draft = Draft(events.REMOVEXATTR, self._path_of(inode), {"ino": inode, "name": name})
        self.tree.check(draft)
        if node.nlink == 0:   # open but unlinked: this kernel's file only (Tree.change_unlinked)
            self.tree.change_unlinked(draft, time.time_ns())
        else:
            await self._submit_one(draft)


_HANDLER_NAMES = guard(LighthouseOperations)
