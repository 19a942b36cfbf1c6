"""The file verbs of the Python API (`Client.files`): a mount's verbs, without a mount.

Each verb walks its path as the kernel walks it for the mount (a lookup per name, each
checked like the mount's: EACCES for another agent's memories), makes the checks the
mount makes in the order it makes them, builds the draft the mount builds and submits it
through the tree's check. A refusal raises the lighthousefs.errors exception that
carries the errno the same call on a mount `--agent <actor>` answers; the actor
`operator` has the rights of a mount without `--agent`.

There is no `events` file, `.lighthouse` or `.history` here: events are read with
Client.read and Client.follow.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import stat as stat_
from typing import Callable

from . import errors
from .domain import chunks, events, rules
from .domain.events import Draft, Event
from .domain.layout import PROJECTS_INO, ROOT_INO
from .domain.node import NAME_MAX, Node
from .domain.tree import Tree
from .engine.projection import load_tree, replay
from .store import Store, contents

log = logging.getLogger("lighthousefs.api")

# Answers, not refusals, as at the mount's error boundary: logged at DEBUG only.
EXPECTED_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENODATA}
# Names at the top of a mount that are not in the tree: never removed nor replaced.
VIRTUAL_TOP = (b"events", b".lighthouse")
HISTORY_NAME = b".history"
# Tries of an append (or an edit) whose content another producer replaced meanwhile,
# as many as the mount's (fs/operations.py APPEND_ROUNDS).
APPEND_ROUNDS = 100
KINDS = {stat_.S_IFREG: "file", stat_.S_IFDIR: "dir", stat_.S_IFLNK: "symlink"}


@contextlib.contextmanager
def logged_refusal(actor: str):
    """One log line for a refusal, naming its errno and its rule (in the message)."""
    try:
        yield
    except errors.LighthouseError as exc:
        if not isinstance(exc, errors.StoreUnavailable):
            log.log(logging.DEBUG if exc.errno in EXPECTED_ERRNOS else logging.INFO, "%s refused (%s): %s",
                    actor, errno.errorcode.get(exc.errno, exc.errno), exc)
        raise


def _verb(fn):
    """A public verb: its refusal is logged once (not again by a verb it calls)."""
    @functools.wraps(fn)
    def verb(self, *args, **kwargs):
        if self._in_verb:
            return fn(self, *args, **kwargs)
        self._in_verb = True
        try:
            with logged_refusal(self.actor):
                return fn(self, *args, **kwargs)
        finally:
            self._in_verb = False
    return verb


@dataclasses.dataclass(frozen=True, slots=True)
class Stat:
    """What stat(2) on a mount shows of a node (times in ns since the epoch)."""

    kind: str          # "file", "dir", "symlink" or "other" (a FIFO, socket or device)
    size: int
    mode: int          # st_mode: the type bits and the permissions
    nlink: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, node: Node) -> "Stat":
        return cls(KINDS.get(stat_.S_IFMT(node.mode), "other"), node.size, node.mode, node.nlink,
                   node.mtime_ns, node.ctime_ns, node.ino)


class Files:
    """The file verbs, as `actor`. Blocking calls; each brings the client's copy of the
    tree up to date first (one read of the log when nothing changed elsewhere)."""

    def __init__(self, store: Store, actor: str):
        self.store = store
        self.actor = actor
        self._tree: Tree | None = None
        self._policy: rules.Policy | None = None   # what the actor may see
        self._in_verb = False

    def tree(self) -> Tree:
        """The current namespace (loaded once, then brought up to date)."""
        if self._tree is None:
            self._tree = load_tree(self.store)
            self._policy = rules.Policy(self._tree, None if self.actor == rules.OPERATOR else self.actor, False)
        else:
            replay(self.store, self._tree, float("inf"))
        return self._tree

    # ---- reading -----------------------------------------------------------------------

    @_verb
    def stat(self, path: str) -> Stat:
        return Stat.of(self._walk(self.tree(), _names(path)))

    @_verb
    def exists(self, path: str) -> bool:
        """False for a missing path; errors (EACCES, ENOTDIR) are raised, as by stat."""
        try:
            self.stat(path)
        except errors.NotFound:
            return False
        return True

    @_verb
    def list(self, path: str = "", stats: bool = False) -> list:
        """The names in a directory, sorted, without those the actor may not see; with
        `stats`, (name, Stat) pairs."""
        tree = self.tree()
        node = self._walk(tree, _names(path))
        if not node.is_dir:
            raise errors.NotADirectory(f"{path} is not a directory")
        entries = sorted(self._policy.visible_entries(node.ino, node.entries))
        if stats:
            return [(_str(name), Stat.of(tree.nodes[ino])) for name, ino in entries]
        return [_str(name) for name, _ in entries]

    @_verb
    def read(self, path: str) -> bytes:
        """A file's whole content."""
        self._check_history(tree := self.tree(), _names(path), itself=True)
        node = self._walk(tree, _names(path))
        if node.is_dir:
            raise errors.IsADirectory(f"{path} is a directory")
        if not stat_.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{path} is not a regular file")
        return contents.read(self.store, node.size, node.chunks)

    # ---- writing -----------------------------------------------------------------------

    @_verb
    def write(self, path: str, data: bytes, *, parents: bool = False, mode: int = 0o644) -> Event:
        """Create or replace the file at `path` (its directory must exist, unless
        `parents`): one event, as a close() after open(O_CREAT|O_TRUNC) and write()."""
        if parents:   # by the path first: before a directory on the way is made
            rules.check_format(rules.format_of_path(path), data, path)
        tree = self.tree()
        parent, name = self._parent(tree, path, parents)
        node = self._lookup(tree, parent, name)
        if node is None:
            self._check_history(tree, _names(path), itself=True)
            return self._create(tree, parent, name, data, mode)
        self._check_rewrite(tree, node, path)
        hashes, new_chunks = chunks.split(data)
        return self._submit(tree, events.write(tree.path(parent.ino, name), node.ino, len(data), hashes,
                                               actor=self.actor), new_chunks, data)

    @_verb
    def append(self, path: str, data: bytes, *, mode: int = 0o644) -> Event | None:
        """Add `data` at the end of the file, created if missing, as a write through an
        O_APPEND descriptor: it lands after what the file holds when its event is
        applied, whoever wrote last. None if there was nothing to append."""
        def appended(node: Node):
            if not data:
                return None
            if self._policy.format_of_inode(node.ino) is not None:   # checked whole, as the mount does
                return self._whole(contents.read(self.store, node.size, node.chunks) + data)
            return (node.size + len(data), *contents.appended(self.store, node.size, node.chunks, data), None)
        return self._rewrite(path, appended, created=(data, mode))

    @_verb
    def edit(self, path: str, change: Callable[[bytes], bytes]) -> Event | None:
        """Replace a file's content by change(content), on the content it was made from:
        if another producer writes the file meanwhile, `change` runs again on its
        content. Errors that `change` raises are the caller's. None if nothing changed."""
        def edited(node: Node):
            old = contents.read(self.store, node.size, node.chunks)
            new = change(old)
            return None if new == old else self._whole(new)
        return self._rewrite(path, edited)

    @_verb
    def mkdir(self, path: str, mode: int = 0o755) -> Event:
        """One directory; its parent must exist (EEXIST if it is there already)."""
        tree = self.tree()
        parent, name = self._parent(tree, path)
        if self._lookup(tree, parent, name) is not None:
            raise errors.Exists(f"{path} exists")
        return self._make_dir(tree, parent, name, mode)

    @_verb
    def mkdirs(self, path: str) -> Node:
        """The directory at `path`, made with its parents where missing (mkdir -p)."""
        tree = self.tree()
        return self._mkdirs(tree, _names(path))

    @_verb
    def delete(self, path: str) -> Event:
        """Remove a file, or an empty directory (as remove(3): unlink, else rmdir)."""
        tree = self.tree()
        parent, name = self._parent(tree, path)
        self._check_not_fixed(parent, name)
        node = self._lookup(tree, parent, name)
        if node is None:
            raise errors.NotFound(f"{path}: no such file or directory")
        return self._submit(tree, events.unlink(tree.path(parent.ino, name), parent.ino, name, actor=self.actor),
                            conflict=errors.NotFound)

    @_verb
    def rename(self, old: str, new: str) -> Event | None:
        """Move `old` to `new`, replacing a file there (or an empty directory, by a
        directory), as rename(2). None when both name the same node (nothing to do)."""
        tree = self.tree()
        old_parent, old_name = self._parent(tree, old)
        new_parent, new_name = self._parent(tree, new)
        self._check_not_fixed(old_parent, old_name)
        node = self._lookup(tree, old_parent, old_name)
        if node is None:
            raise errors.NotFound(f"{old}: no such file or directory")
        target = self._lookup(tree, new_parent, new_name)
        # The kernel's checks come before the daemon's (fs/namei.c do_renameat2, vfs_rename).
        if node.is_dir and tree.is_ancestor(node.ino, new_parent.ino):
            raise errors.InvalidArgument(f"cannot move {old} into itself")
        self._check_history(tree, _names(new), itself=not node.is_dir)
        self._check_not_fixed(new_parent, new_name)
        if target is not None and target.is_dir and tree.is_ancestor(target.ino, old_parent.ino):
            raise errors.NotEmpty(f"{new} is not empty")
        if target is node:
            return None
        if target is not None and node.is_dir and not target.is_dir:
            raise errors.NotADirectory(f"{new} is not a directory")
        if target is not None and target.is_dir and not node.is_dir:
            raise errors.IsADirectory(f"{new} is a directory")
        draft = events.rename(tree.path(old_parent.ino, old_name), old_parent.ino, old_name, new_parent.ino,
                              new_name, to=tree.path(new_parent.ino, new_name), actor=self.actor)
        tree.check(draft)   # rights, layout and areas (EXDEV) before any content is read
        self._check_format(self._policy.format_of(new_parent.ino, new_name), node)
        return self._submit(tree, draft, conflict=errors.NotFound)

    # ---- the walk ------------------------------------------------------------------------

    def _lookup(self, tree: Tree, parent: Node, name: bytes) -> Node | None:
        """What the mount's lookup of parent/name (a directory) answers (None: no such entry)."""
        self._policy.check_see(parent.ino, name)
        return tree.find(parent.ino, name)

    def _walk(self, tree: Tree, names: list[bytes]) -> Node:
        node = tree.nodes[ROOT_INO]
        for i, name in enumerate(names):
            if not node.is_dir:
                raise errors.NotADirectory(f"{_str(b'/'.join(names[:i]))} is not a directory")
            child = self._lookup(tree, node, name)
            if child is None:
                raise errors.NotFound(f"{tree.path(node.ino, name)}: no such file or directory")
            node = child
        return node

    def _parent(self, tree: Tree, path: str, make: bool = False) -> tuple[Node, bytes]:
        """The directory that holds `path`'s last name (made, with `make`), and the name."""
        names = _names(path)
        if not names:
            raise errors.LighthouseError("the root cannot be changed", errno_=errno.EBUSY)
        self._check_history(tree, names)
        parent = self._mkdirs(tree, names[:-1]) if make else self._walk(tree, names[:-1])
        if not parent.is_dir:
            raise errors.NotADirectory(f"{_str(b'/'.join(names[:-1]))} is not a directory")
        return parent, names[-1]

    def _mkdirs(self, tree: Tree, names: list[bytes]) -> Node:
        node = tree.nodes[ROOT_INO]
        for name in names:
            child = self._lookup(tree, node, name)
            if child is None:
                event = self._make_dir(tree, node, name, 0o755)
                child = tree.get(events.ino_for_seq(event.seq))
            elif not child.is_dir:
                raise errors.NotADirectory(f"{tree.path(node.ino, name)} is not a directory")
            node = child
        return node

    # ---- the mount's checks --------------------------------------------------------------

    def _check_not_fixed(self, parent: Node, name: bytes) -> None:
        if parent.ino == ROOT_INO and name in VIRTUAL_TOP:
            raise errors.NotPermitted(f"{name.decode()} is part of the layout")
        if name == HISTORY_NAME and self._policy.is_project(parent.ino):
            raise errors.ReadOnly(".history is read-only")

    def _check_history(self, tree: Tree, names: list[bytes], itself: bool = False) -> None:
        """A project's .history (read-only, on a mount): EROFS below it, EISDIR (`itself`) for it."""
        project = tree.find(PROJECTS_INO, names[1]) if names[:3:2] == [b"projects", HISTORY_NAME] else None
        if project is not None and self._policy.is_project(project.ino) and (len(names) > 3 or itself):
            raise errors.ReadOnly(".history is read-only") if len(names) > 3 else errors.IsADirectory(".history")

    def _check_rewrite(self, tree: Tree, node: Node, path: str) -> None:
        """May the actor open this file for writing? (As the mount's open(2) decides:
        by where the node is now.)"""
        if node.is_dir:
            raise errors.IsADirectory(f"{path} is a directory")
        rules.check_node_change(tree, self.actor, node)
        if not stat_.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{path} is not a regular file")

    def _check_format(self, kind: bytes | None, node: Node) -> None:
        """A file that becomes a state.json or status (by a rename) must fit the format.
        (No directory becomes an agent's: area roots are never renamed.)"""
        if kind is None:
            return
        if not stat_.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{kind.decode()} must be a regular file")
        rules.check_format_size(kind, node.size)
        rules.validate_format(kind, contents.read(self.store, node.size, node.chunks))

    # ---- changes -----------------------------------------------------------------------

    def _rewrite(self, path: str, content: Callable[[Node], tuple | None],
                 created: tuple[bytes, int] | None = None) -> Event | None:
        """Write the content that content(node) gives (size, hashes, new chunks, and the
        bytes when they must be checked; None: nothing to write) on the content it was
        made from: every node skips the write if another producer's write landed first,
        and it is made again on what is there then. A missing file is made with
        `created` (data, mode), or is ENOENT."""
        for _ in range(APPEND_ROUNDS):
            tree = self.tree()
            parent, name = self._parent(tree, path)
            node = self._lookup(tree, parent, name)
            if node is None:
                self._check_history(tree, _names(path), itself=True)
                if created is None:
                    raise errors.NotFound(f"{path}: no such file")
                return self._create(tree, parent, name, *created)
            self._check_rewrite(tree, node, path)
            new = content(node)
            if new is None:
                return None
            size, hashes, new_chunks, data = new
            event = self._submit(tree, events.write(tree.path(parent.ino, name), node.ino, size, hashes,
                                                    base=chunks.content_digest(node.size, node.chunks),
                                                    actor=self.actor), new_chunks, data)
            if event is not None:
                return event
        raise errors.LighthouseError(f"{path}: not stored, the file was written by others "
                                     f"{APPEND_ROUNDS} times while this change was tried")

    @staticmethod
    def _whole(data: bytes) -> tuple:
        return (len(data), *chunks.split(data), data)

    def _create(self, tree: Tree, parent: Node, name: bytes, data: bytes, mode: int) -> Event:
        hashes, new_chunks = chunks.split(data)
        return self._submit(tree, events.mknod(tree.path(parent.ino, name), parent.ino, name,
                                               stat_.S_IFREG | (mode & 0o7777), size=len(data), chunks=hashes,
                                               actor=self.actor), new_chunks, data)

    def _make_dir(self, tree: Tree, parent: Node, name: bytes, mode: int) -> Event:
        return self._submit(tree, events.mknod(tree.path(parent.ino, name), parent.ino, name,
                                               stat_.S_IFDIR | (mode & 0o7777), actor=self.actor))

    def _submit(self, tree: Tree, draft: Draft, new_chunks: dict[bytes, bytes] | None = None,
                data: bytes | None = None, conflict: type[errors.LighthouseError] = errors.Exists) -> Event | None:
        """Check `draft` (with the rules for its actor), and the content `data` it
        stores, against `tree` (brought up to date by the caller); append it, and apply
        it: the tree reads the log again only if another producer appended before it.
        A conditional write (with a `base`) that another producer's write made void
        gives None; any other change made void gives `conflict`."""
        tree.check(draft)
        if data is not None:
            rules.check_content(tree, draft, data)
        [event] = self.store.append([draft], new_chunks or {})
        replay(self.store, tree, event.seq - 1)
        if tree.apply(event) is None:
            if "base" in draft.payload:
                return None
            raise conflict(f"{draft.path}: changed by another producer at the same time")
        return event


def _names(path: str) -> list[bytes]:
    """A slash-separated path's names (no `.` or `..`: a path is read from the root)."""
    names = [part.encode("utf-8", events.PATH_ERRORS) for part in path.split("/") if part]
    for name in names:
        if name in (b".", b".."):
            raise errors.InvalidArgument(f"{path}: '.' and '..' are not allowed in a path")
        if len(name) > NAME_MAX:
            raise errors.NameTooLong(f"a name of {len(name)} bytes (at most {NAME_MAX})")
    return names


def _str(name: bytes) -> str:
    return name.decode("utf-8", events.PATH_ERRORS)
