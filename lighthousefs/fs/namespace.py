"""Changes to the live tree's names and attributes, checked for the mount's actor:
mkdir, mknod, symlink, create, unlink, rmdir, rename, link, setattr and the xattrs.

Each builds its event with the typed constructors of domain/events.py, checks it
against the tree (the rules of the acting agent run inside tree.check) and submits it.

Concurrency: namespace changes hold `ns_lock` from their check to the applied event,
so no other local change can slip between "the name is free" and "the name is taken".
File contents are committed without it (a write event can never conflict by name).
A file created without O_EXCL takes its name locally at once (files/newfiles.py),
with no await between the checks and taking it; every local check consults those
names, so its MKNOD at close needs no lock either: only another producer can have
taken the name meanwhile, and then the close reports it.
"""
from __future__ import annotations

import os
import stat
import time

import trio

from .. import errors
from ..domain import events, rules
from ..domain.rules import Policy, check_format_size
from ..domain.tree import Node
from ..engine.journal import Journal
from ..files.formats import Formats
from ..files.handles import FileHandle, Handles
from ..files.writer import Writer
from ..views.base import Views
from .kernel import Kernel


class Namespace:
    def __init__(self, journal: Journal, policy: Policy, writer: Writer, formats: Formats, kernel: Kernel,
                 handles: Handles, views: Views):
        self.tree = journal.tree
        self.policy = policy
        self.actor = journal.actor   # the agent (or the operator) every change is checked for
        self.writer = writer
        self.commits = writer.commits   # submit_one: one event, through the journal
        self.formats = formats
        self.kernel = kernel
        self.handles = handles
        self.views = views
        self.ns_lock = trio.Lock()

    # ---- checks --------------------------------------------------------------------------

    def require_tree_node(self, ino: int) -> Node:
        """The inode `ino` of the live tree, or the errno a change to it gets."""
        view = self.views.of(ino)
        if view is not None:
            view.refuse_change()
        return self.tree.get(ino)

    def require_tree_dir(self, ino: int) -> Node:
        node = self.require_tree_node(ino)
        if not node.is_dir:
            raise errors.NotADirectory(f"inode {ino} is not a directory")
        return node

    def check_writable_inode(self, ino: int) -> None:
        """May this inode's content or attributes change? Decided by where the node is
        now (rules.area_of), never by the path the kernel reached it by."""
        self.policy.check_mount_writable()
        new = self.writer.new_files.get(ino)
        if new is not None:   # not in the tree yet: where its name was taken
            rules.check_change(self.tree, self.actor, rules.area_root(self.tree, new.parent),
                               lambda: self.writer.name_of(ino))
            return
        node = self.tree.nodes.get(ino)
        if node is not None:
            rules.check_node_change(self.tree, self.actor, node)

    def _check_not_a_door(self, parent: int, name: bytes) -> None:
        """The root's events and .lighthouse are part of the layout, as its directories
        are; a project's .history is read-only."""
        view = self.views.door(parent, name)
        if view is not None:
            view.refuse_change()

    # ---- new names -----------------------------------------------------------------------

    async def make(self, parent: int, name: bytes, mode: int, uid: int, gid: int, target: bytes = b"",
                   rdev: int = 0) -> Node:
        self.require_tree_dir(parent)
        self.policy.check_mount_writable()
        async with self.ns_lock:
            draft = events.mknod(self.tree.path(parent, name), parent, name, mode, uid=uid, gid=gid,
                                 target=target, rdev=rdev, actor=self.actor)
            self.writer.check_free(parent, name)
            self.tree.check(draft)   # the layout, the area's rights, a state.json that is not a file
            rules.check_content(self.tree, draft, b"")   # never an empty state.json
            event, change = await self.commits.submit_one(draft)
        if change is None:
            raise errors.Exists(f"{draft.path} was created by another producer first")
        node = self.tree.get(events.ino_for_seq(event.seq))
        self.kernel.remember(node, parent, name)
        return node

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int) -> Node:
        # A state.json or status is never logged empty (an empty state.json is not JSON):
        # even with O_EXCL it enters the log at its first close, checked then. (O_EXCL
        # then excludes on this node only.)
        checked = self.policy.format_of(parent, name) is not None
        if not self.writer.may_defer(parent, name):
            if checked:
                raise errors.StoreUnavailable(f"{self.tree.path(parent, name)}: the store is failing, "
                                              "so the new file could not be stored")
            return await self.make(parent, name, mode, uid, gid)
        if flags & os.O_EXCL and not checked:
            return await self.make(parent, name, mode, uid, gid)
        return await self._make_new_file(parent, name, mode, uid, gid)

    async def _make_new_file(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Node:
        """A file created here, not yet in the log (files/newfiles.py)."""
        def check() -> None:
            # Run again after a reservation awaited the store (see Writer.make_new_file).
            self.require_tree_dir(parent)
            self.policy.check_mount_writable()
            self.writer.check_free(parent, name)
            self.tree.check(events.mknod("", parent, name, mode, actor=self.actor))
        node = await self.writer.make_new_file(parent, name, mode, uid, gid, check)
        self.kernel.remember(node, parent, name)   # (no await since the name was taken)
        return node

    async def link(self, inode: int, new_parent: int, new_name: bytes) -> Node:
        await self.writer.settle(inode)
        node = self.require_tree_node(inode)
        self.require_tree_dir(new_parent)
        self.policy.check_mount_writable()
        draft = events.link(self.tree.path(new_parent, new_name), inode, new_parent, new_name, actor=self.actor)
        self.tree.check(draft)   # rights, layout and areas (EXDEV) before any content is read
        await self.formats.check_format(self.policy.format_of(new_parent, new_name), node)
        async with self.ns_lock:
            self.writer.check_free(new_parent, new_name)
            self.tree.check(draft)
            _, change = await self.commits.submit_one(draft)
        if change is None:
            raise errors.NotFound(f"inode {inode} was removed by another producer first")
        self.writer.forget_formats(change)
        node = self.tree.get(inode)
        self.kernel.remember(node, new_parent, new_name)
        return node

    # ---- removals and renames ------------------------------------------------------------

    async def remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        self.require_tree_dir(parent)
        self._check_not_a_door(parent, name)
        self.policy.check_see(parent, name)
        await self.writer.settle_name(parent, name)
        async with self.ns_lock:
            node = self.tree.child(parent, name)
            if want_dir and not node.is_dir:
                raise errors.NotADirectory(f"{self.tree.path(parent, name)} is not a directory")
            if not want_dir and node.is_dir:
                raise errors.IsADirectory(f"{self.tree.path(parent, name)} is a directory")
            self.policy.check_mount_writable()
            draft = events.unlink(self.tree.path(parent, name), parent, name, actor=self.actor)
            self.tree.check(draft)
            _, change = await self.commits.submit_one(draft)
        if change is None:
            raise errors.NotFound(f"{draft.path} was removed by another producer first")

    async def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes, *,
                     exchange: bool, noreplace: bool) -> None:
        for parent in (parent_old, parent_new):
            self.require_tree_dir(parent)
        for parent, name in ((parent_old, name_old), (parent_new, name_new)):
            self._check_not_a_door(parent, name)
            self.policy.check_see(parent, name)
            await self.writer.settle_name(parent, name)
        async with self.ns_lock:
            self.policy.check_mount_writable()
            node = self.tree.child(parent_old, name_old)
            draft = events.rename(self.tree.path(parent_old, name_old), parent_old, name_old, parent_new, name_new,
                                  to=self.tree.path(parent_new, name_new), exchange=exchange, noreplace=noreplace,
                                  actor=self.actor)
            self.tree.check(draft)   # rights, layout and areas (EXDEV) before any content is read
            if exchange:
                await self.formats.check_fits(parent_old, name_old, self.tree.child(parent_new, name_new))
            await self.formats.check_fits(parent_new, name_new, node)
            self.tree.check(draft)   # again: the checks of content awaited
            _, change = await self.commits.submit_one(draft)
        if change is None:
            raise errors.NotFound(f"{draft.path} was changed by another producer first")
        self.kernel.where[node.ino] = (parent_new, name_new)
        self.writer.forget_formats(change)

    # ---- attributes ----------------------------------------------------------------------

    async def setattr(self, inode: int, attr, fields, fh: int | None) -> None:
        """`attr` and `fields` as pyfuse3 hands them to setattr."""
        await self.writer.settle(inode)
        node = self.require_tree_node(inode)
        self.check_writable_inode(inode)
        if fields.update_size:
            if not stat.S_ISREG(node.mode):
                raise errors.InvalidArgument("only regular files can be truncated")
            check_format_size(self.formats.format_of(inode), attr.st_size)   # before the size changes
            handle = self.handles.get(fh) if fh is not None else None
            if isinstance(handle, FileHandle):
                # ftruncate and O_TRUNC: part of the open file's next commit at close.
                # The kernel leaves their times to us (it sends none, unlike truncate(2)).
                await handle.open_file.buffer.truncate(attr.st_size)
                handle.open_file.touched()
                handle.wrote = True
            else:
                await self.writer.truncate_now(node, attr.st_size)
        changes = {}
        if fields.update_mode:
            changes["mode"] = attr.st_mode & 0o7777
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_atime:
            changes["atime"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime"] = attr.st_mtime_ns
        if changes:
            draft = events.setattr(self.kernel.path_of(inode), inode, changes)
            self.tree.check(draft)   # a time the store cannot hold: EINVAL
            await self._change_attributes(node, draft)
            open_file = self.writer.open_files.get(inode)
            if "mtime" in changes and open_file is not None and open_file.times is not None:
                # futimens before close (cp -p, rsync): the close commits this mtime.
                open_file.times = (changes["mtime"], self.tree.get(inode).ctime_ns)

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        await self.writer.settle(inode)
        node = self.require_tree_node(inode)
        self.check_writable_inode(inode)
        draft = events.setxattr(self.kernel.path_of(inode), inode, name, value)
        self.tree.check(draft)   # the total of the file's attributes (ENOSPC)
        await self._change_attributes(node, draft)

    async def removexattr(self, inode: int, name: bytes) -> None:
        await self.writer.settle(inode)
        node = self.require_tree_node(inode)
        self.check_writable_inode(inode)
        draft = events.removexattr(self.kernel.path_of(inode), inode, name)
        self.tree.check(draft)
        await self._change_attributes(node, draft)

    async def _change_attributes(self, node: Node, draft: events.Draft) -> None:
        """Log an attribute change; that of a file with no names left (open but unlinked)
        changes this node's tree only (Tree.change_unlinked): no other node has the file,
        and its event could name no path to scope it by, so every agent would see it."""
        if node.nlink == 0:
            self.tree.change_unlinked(draft, time.time_ns())
        else:
            await self.commits.submit_one(draft)
