"""The pyfuse3 Operations: FUSE requests in, answered by the parts they belong to.

The handlers are thin: changes to names and attributes go to namespace.py, open and
new files and their commits to files/writer.py (content formats: files/formats.py),
the kernel's references and invalidation to kernel.py, attributes to attrs.py, and
the virtual parts of the namespace (`events`, `.lighthouse`, `.history`) to the view
that owns the inode (views/). Errors are translated at one boundary (boundary.py):
domain errors become their errno, anything unexpected is logged with its traceback and
answered with EIO. Handlers do no blocking I/O on the trio thread: the store is reached
through the journal, the history and the events file, which use worker threads.
Concurrency is described in namespace.py (names) and files/writer.py (contents).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Callable

import pyfuse3

from .. import errors
from ..domain import events
from ..domain.events import Event
from ..domain.rules import Policy
from ..domain.tree import Change, Node
from ..domain.visibility import view_of
from ..engine.journal import Journal
from ..files.chunk_cache import ChunkCache, Chunks
from ..files.commits import pending_times
from ..files.formats import Formats
from ..files.handles import FileHandle, Handles, OpenFile
from ..files.writer import Writer
from ..metrics import Metrics
from ..views.base import FIRST_VIEW_INO, Listing, Views
from ..views.control import ControlView
from ..views.events_file import EventsFile, EventsView
from ..views.history import History
from ..views.history_dir import HistoryView
from .attrs import CACHE_TIMEOUT, Attrs
from .boundary import guard
from .kernel import Kernel
from .namespace import Namespace

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
        self.metrics = metrics
        self._op_timers = {name: metrics.op_seconds.labels(name).observe for name in _HANDLER_NAMES}
        cache = ChunkCache(cache_bytes, on_hit=metrics.cache.labels("l1", "hit").inc,
                           on_miss=metrics.cache.labels("l1", "miss").inc)
        metrics.cache_bytes.set_function(lambda: cache.bytes)
        self.kernel = Kernel(self.tree, lambda ino: ino in self.writer.open_files)
        self._handles = Handles()
        chunks = Chunks(cache, self.store, journal.call_store, self.kernel.path_of)
        # (format_of is looked up late: Formats needs the writer it is handed to.)
        self.writer = Writer(journal, chunks, self.kernel, self._handles, lambda ino: self.formats.format_of(ino),
                             self.kernel.path_of)
        self.formats = Formats(policy, self.writer)
        metrics.new_files.set_function(lambda: len(self.writer.new_files))
        self.attrs = Attrs(self.tree, self.writer.open_files, pending_times)
        viewer = policy.agent.decode() if policy.agent else None
        self.events_file = EventsFile(journal.guarded, lambda event: view_of(event, viewer),
                                      lambda: self.tree.applied_seq)
        self.history = History(journal.guarded)
        self.history_view = HistoryView(self.history, self.tree, self.attrs, viewer, policy.is_project,
                                        self.writer.committed_buffer)
        metrics.history_trees.set_function(lambda: self.history.trees_kept)
        metrics.history_tree_inodes.set_function(lambda: self.history.inodes_kept)
        metrics.history_inodes.set_function(lambda: self.history_view.inodes)
        self.views = Views(EventsView(self.events_file, self.attrs), ControlView(control, self.attrs),
                           self.history_view)
        self.namespace = Namespace(journal, policy, self.writer, self.formats, self.kernel, self._handles,
                                   self.views)
        journal.listeners.append(self._on_applied)

    @property
    def kernel_inodes(self) -> int:
        return self.kernel.inodes

    def _node(self, ino: int) -> Node:
        node = self.writer.live_node(ino)
        if node is None:
            self.writer.new_files.check_not_dropped(ino)   # ESTALE: the kernel looks the name up again
            raise errors.NotFound(f"no inode {ino}")
        return node

    def _on_applied(self, event: Event, change: Change | None, local: bool) -> None:
        self.events_file.on_applied(event)
        self.writer.on_applied(event, change, local)
        if not local and change is not None:
            self.kernel.on_change(change)

    # ---- lookups and attributes ----------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        if len(name) > 255:
            raise errors.NameTooLong(f"name of {len(name)} bytes")
        view = self.views.of(parent_inode) or self.views.door(parent_inode, name)
        if view is not None:
            return await view.lookup(parent_inode, name)
        self.policy.check_see(parent_inode, name)
        node = self.tree.find(parent_inode, name)
        if node is None:
            new = self.writer.new_files.find(parent_inode, name)
            node = None if new is None else new.node
        if node is None:
            self.tree.get_dir(parent_inode)   # ENOENT / ENOTDIR for a bad parent
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = 0                     # a negative entry the kernel may cache
            attr.entry_timeout = CACHE_TIMEOUT
            return attr
        self.kernel.remember(node, parent_inode, name)
        return self.attrs.attr(node)

    async def forget(self, inode_list):
        for ino, count in inode_list:
            if not self.views.forget(ino, count) and self.kernel.forget(ino, count):
                self.tree.release_orphan(ino)   # dropped if unlinked

    async def getattr(self, inode, ctx=None):
        return await self._attr_of(inode)

    async def _attr_of(self, inode: int) -> pyfuse3.EntryAttributes:
        """Attributes of any inode (tree or view); shared by getattr and readdir."""
        view = self.views.of(inode)
        if view is not None:
            return await view.getattr(inode)
        return self.attrs.attr(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        await self.namespace.setattr(inode, attr, fields, fh)
        return self.attrs.attr(self.tree.get(inode))

    # ---- namespace changes (namespace.py) ------------------------------------------------

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self.attrs.attr(await self.namespace.make(parent_inode, name, stat.S_IFDIR | (mode & 0o7777),
                                                         ctx.uid, ctx.gid))

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        # Device nodes are stored like any other node (type and rdev); the mount is
        # nodev (daemon.py), so the kernel never opens one as a device.
        if stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise errors.InvalidArgument(f"mknod of file type {stat.S_IFMT(mode):o}")
        return self.attrs.attr(await self.namespace.make(parent_inode, name, mode, ctx.uid, ctx.gid, rdev=rdev))

    async def symlink(self, parent_inode, name, target, ctx):
        return self.attrs.attr(await self.namespace.make(parent_inode, name, stat.S_IFLNK | 0o777, ctx.uid, ctx.gid,
                                                         target=target))

    async def readlink(self, inode, ctx):
        view = self.views.of(inode)
        node = await view.node(inode) if view is not None else self.tree.get(inode)
        if node is None or not stat.S_ISLNK(node.mode):
            raise errors.InvalidArgument("not a symbolic link")
        return node.target

    async def create(self, parent_inode, name, mode, flags, ctx):
        node = await self.namespace.create(parent_inode, name, stat.S_IFREG | (mode & 0o7777), flags,
                                           ctx.uid, ctx.gid)
        return self._open_tree_file(node, flags), self.attrs.attr(node)

    async def unlink(self, parent_inode, name, ctx):
        await self.namespace.remove(parent_inode, name, want_dir=False)

    async def rmdir(self, parent_inode, name, ctx):
        await self.namespace.remove(parent_inode, name, want_dir=True)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.namespace.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                    exchange=bool(flags & pyfuse3.RENAME_EXCHANGE),
                                    noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))

    async def link(self, inode, new_parent_inode, new_name, ctx):
        return self.attrs.attr(await self.namespace.link(inode, new_parent_inode, new_name))

    # ---- file contents -------------------------------------------------------------------

    def _open_tree_file(self, node: Node, flags: int) -> pyfuse3.FileInfo:
        open_files = self.writer.open_files
        open_file = open_files.get(node.ino)
        if open_file is None:
            open_file = OpenFile(node.ino, self.writer.committed_buffer(node))
            open_files[node.ino] = open_file
        open_file.refs += 1
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        # The kernel may keep this file's pages across opens: every change made
        # elsewhere invalidates them (_on_applied), and local writes pass through them.
        handle = FileHandle(open_file, writable, bool(flags & os.O_APPEND))
        return pyfuse3.FileInfo(fh=self._handles.add(handle), keep_cache=True)

    async def open(self, inode, flags, ctx):
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY
        view = self.views.of(inode)
        if view is not None:
            handle = await view.open(inode, writing)
            return pyfuse3.FileInfo(fh=self._handles.add(handle), direct_io=not handle.keep_cache,
                                    keep_cache=handle.keep_cache)
        node = self._node(inode)
        if node.is_dir:
            raise errors.IsADirectory("is a directory")
        if writing:
            self.namespace.check_writable_inode(inode)
            if flags & os.O_TRUNC:
                self.writer.check_reachable()
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
        return await handle.read(off, size)   # a view's (views/base.py)

    async def write(self, fh, off, buf):
        handle = self._handles[fh]
        if not isinstance(handle, FileHandle) or not handle.writable:
            raise errors.PermissionDenied("file not open for writing")
        if handle.open_file.lost is not None:
            raise handle.open_file.lost
        if handle.refused is not None:
            raise pyfuse3.FUSEError(handle.refused.errno)   # logged once, when it was refused
        self.writer.check_reachable()
        await self.formats.check_write(handle, off, buf)
        return await self.writer.write(handle, off, buf)

    async def flush(self, fh):
        await self.writer.flush(self._handles.get(fh))

    async def fsync(self, fh, datasync):
        await self.writer.fsync(self._handles.get(fh))

    async def release(self, fh):
        await self.writer.release(self._handles.pop(fh, None))

    # ---- directories ---------------------------------------------------------------------

    async def opendir(self, inode, ctx):
        view = self.views.of(inode)
        if view is not None:
            return self._handles.add(await view.opendir(inode))
        directory = self.tree.get_dir(inode)
        entries = self.policy.visible_entries(inode, directory.entries)
        new_files = self.writer.new_files
        entries += [(name, ino) for name, ino in new_files.names_in(inode) if name not in directory.entries]
        # The views' doors: the root's events and .lighthouse. A project's .history is
        # reachable by name but not listed (like ZFS's hidden .zfs): cp -r, rm -r, find
        # and grep -r would otherwise walk every past version.
        entries += self.views.listed(inode)
        return self._handles.add(entries)

    async def readdir(self, fh, start_id, token):
        entries = self._handles[fh]
        if isinstance(entries, Listing):
            return await entries.view.readdir(entries, start_id, token)
        nodes, attrs, lookups = self.tree.nodes, self.attrs.cache, self.kernel.lookups
        new_files, open_files = self.writer.new_files, self.writer.open_files
        # The hot loop of ls, find and git status: tree entries take the direct path
        # (no await, and the reused attributes without a call); only virtual inodes
        # take _attr_of.
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            node = nodes.get(ino) or new_files.node(ino)
            if node is not None:
                cached = attrs.get(ino)
                if cached is not None and cached[0] == node.version and ino not in open_files:
                    attr = cached[1]
                else:
                    attr = self.attrs.attr(node)
            elif events.INO_BASE <= ino < FIRST_VIEW_INO:
                continue   # removed since opendir
            else:
                try:
                    attr = await self._attr_of(ino)
                except errors.NotFound:
                    continue
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                return
            # readdirplus hands the kernel a reference, as a lookup does (Kernel.remember, inline).
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
        await self.namespace.setxattr(inode, name, value)

    async def getxattr(self, inode, name, ctx):
        node = await self._view_node(inode)
        if node is None or not node.xattrs or name not in node.xattrs:
            raise errors.NoAttribute(f"no attribute {name!r}")
        return node.xattrs[name]

    async def listxattr(self, inode, ctx):
        node = await self._view_node(inode)
        return list(node.xattrs) if node is not None and node.xattrs else []

    async def removexattr(self, inode, name, ctx):
        self._check_xattr_name(name)
        await self.namespace.removexattr(inode, name)

    async def _view_node(self, inode: int) -> Node | None:
        """The node an inode shows: a live one, or a view's (a past one in .history)."""
        view = self.views.of(inode)
        return await view.node(inode) if view is not None else self.writer.live_node(inode)


_HANDLER_NAMES = guard(LighthouseOperations)
