"""The projection: the current namespace, built by applying events in order.

Pure: no FUSE, no store, no clock (times come from events). Every check that decides
whether an event is valid runs twice with the same code: before the event is
appended (the caller gets the errno) and when it is applied (an event that has become
invalid in between, because another producer got there first, is skipped the same way
on every node and on every replay). Its nodes are node.py's; its snapshots snapshot.py's."""
from __future__ import annotations

import errno
import logging
import stat
from typing import Callable

from .. import errors
from . import events, links, rules
from .chunks import content_digest, pack
from .events import Event
from .layout import AGENTS_INO, MEMORIES_INO, PROJECTS_INO, ROOT_INO, SHARED_MEMORIES_INO  # noqa: F401 (re-exported)
from .node import XATTRS_TOTAL_MAX, Change, Node, check_name, check_time, shared_int  # noqa: F401 (re-exported)
from .queries import Queries

log = logging.getLogger(__name__)


class Tree(Queries):
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.applied_seq = 0
        # The event after which the snapshot this tree was loaded from was taken (0: none).
        self.snapshot_seq = 0
        # Set by the filesystem: an unlinked inode that is still open or known to the
        # kernel stays until is_pinned says otherwise (then release_orphan drops it).
        self.is_pinned: Callable[[int], bool] = lambda ino: False
        root = self._add(ROOT_INO, stat.S_IFDIR | 0o755, parent=ROOT_INO)
        root.nlink = 2
        for ino, name in ((PROJECTS_INO, b"projects"), (MEMORIES_INO, b"memories"), (AGENTS_INO, b"agents")):
            self._add(ino, stat.S_IFDIR | 0o755, parent=ROOT_INO, name=name)
        self._add(SHARED_MEMORIES_INO, stat.S_IFDIR | 0o777, parent=MEMORIES_INO, name=b"shared")

    def _add(self, ino: int, mode: int, parent: int, name: bytes | None = None) -> Node:
        node = Node(ino, mode)
        node.parent = parent
        self.nodes[ino] = node
        if name is not None:
            self.nodes[parent].entries[name] = ino
            self.nodes[parent].nlink += 1
        return node

    # ---- events --------------------------------------------------------------------

    def check(self, draft: events.Draft) -> None:
        """Raise the error the event would meet if it were applied now: the rules for its
        actor (rules.py), then the tree's own. A draft without an actor is the journal's
        to fill in at submit: its rights are checked when it is applied."""
        if draft.actor:
            rules.check_event(self, draft.actor, draft.type, draft.payload, draft.path)
        if draft.type not in events.TREE_TYPES:
            return   # annotations fit any tree
        self._dispatch(draft.type, draft.payload, seq=0, time_ns=0, mutate=False)

    def apply(self, event: Event) -> Change | None:
        """Apply one event; None if it was skipped because it no longer fits the tree."""
        if event.seq <= self.applied_seq:
            raise ValueError(f"event {event.seq} applied after {self.applied_seq}")
        self.applied_seq = event.seq
        root = self.nodes[ROOT_INO]
        if root.mtime_ns == 0:
            # The fixed layout has no creating event: it dates from the first event.
            for ino in (ROOT_INO, PROJECTS_INO, MEMORIES_INO, SHARED_MEMORIES_INO, AGENTS_INO):
                node = self.nodes[ino]
                node.atime_ns = node.mtime_ns = node.ctime_ns = event.time_ns
                node.version += 1
        if event.version >= events.RULES_VERSION:
            # Made under the rules: one its actor could not have made (a producer that
            # skipped the checks) is skipped by every node alike. Older events apply as
            # they always did, so a snapshot and a replay from the start agree.
            try:
                rules.check_event(self, event.actor, event.type, event.payload, event.path)
            except errors.LighthouseError as exc:
                log.info("event %d (%s %s by %s) skipped: refused (%s)", event.seq, event.type, event.path,
                         event.actor, exc)
                return None
        if event.type not in events.TREE_TYPES:
            return Change()
        try:
            return self._dispatch(event.type, event.payload, event.seq, event.time_ns, mutate=True)
        except errors.LighthouseError as exc:
            # Another producer's event made this one impossible; every node skips it alike.
            log.info("event %d (%s %s) skipped: %s", event.seq, event.type, event.path, exc)
            return None

    def change_unlinked(self, draft: events.Draft, time_ns: int) -> Change | None:
        """A setattr or xattr change of a file with no names left (open but unlinked):
        applied to this node's tree only, never logged. No other node has the file, and
        its event could name no path, so no area to scope it by."""
        if self.get(draft.payload["ino"]).nlink:
            raise ValueError(f"inode {draft.payload['ino']} still has a name")
        return self._dispatch(draft.type, draft.payload, seq=0, time_ns=time_ns, mutate=True)

    def _dispatch(self, type_: str, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        handler = getattr(self, "_" + type_)
        return handler(p, seq, time_ns, mutate)

    def _mknod(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        parent = self.live_dir(p["parent"])
        name = p["name"]
        check_name(name)
        if name in parent.entries:
            raise errors.Exists(f"{self.path(parent.ino, name)} exists")
        ino = p.get("ino")
        if ino is not None and (not isinstance(ino, int) or not events.is_reserved_ino(ino)):
            raise errors.InvalidArgument(f"inode {ino!r} is not from a reserved range")
        if ino is not None and ino in self.nodes and self.nodes[ino].nlink > 0:
            # (An unlinked node kept only for this node's kernel does not count: other
            # nodes and replays no longer have it.)
            raise errors.Exists(f"inode {ino} exists")
        if not mutate:
            return None
        node = Node(ino or events.ino_for_seq(seq), shared_int(p["mode"]), p.get("uid", 0), p.get("gid", 0),
                    time_ns)
        node.rdev = p.get("rdev", 0)
        node.mtime_ns = p.get("mtime", time_ns)   # a file created with its content: its last write's
        node.ctime_ns = p.get("ctime", time_ns)
        node.target = p.get("target", b"")
        node.size = p.get("size", len(node.target))
        node.chunks = pack(p.get("chunks", ()))  # a file created with its content: one event
        node.parent = parent.ino
        if node.is_dir:
            parent.nlink += 1
        self.nodes[node.ino] = node
        parent.entries[name] = node.ino
        self._touch_dir(parent, time_ns)
        return Change(entries=[(parent.ino, name)], inodes=[parent.ino])

    def _link(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        node = self.get(p["ino"])
        parent = self.live_dir(p["parent"])
        name = p["name"]
        check_name(name)
        if node.is_dir:
            raise errors.NotPermitted("hard links to directories are not allowed")
        if node.nlink == 0:
            raise errors.NotFound(f"inode {node.ino} has been unlinked")
        if name in parent.entries:
            raise errors.Exists(f"{self.path(parent.ino, name)} exists")
        if not mutate:
            return None
        if node.parent != rules.SEVERAL_AREAS and rules.area_root(self, parent.ino) != rules.area_of(self, node):
            node.parent = rules.SEVERAL_AREAS   # a link across areas: an event from before the rules
        parent.entries[name] = node.ino
        node.nlink += 1
        node.ctime_ns = time_ns
        node.version += 1
        self._touch_dir(parent, time_ns)
        return Change(entries=[(parent.ino, name)], inodes=[parent.ino, node.ino])

    def _unlink(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        parent = self.get_dir(p["parent"])
        node = self.child(parent.ino, p["name"])
        if node.is_dir and node.entries:
            raise errors.NotEmpty(f"{self.path(parent.ino, p['name'])} is not empty")
        if node.ino < events.INO_BASE:
            raise errors.NotPermitted(f"{self.path(parent.ino, p['name'])} is part of the layout")
        if not mutate:
            return None
        del parent.entries[p["name"]]
        self._drop_link(parent, node, time_ns)
        self._touch_dir(parent, time_ns)
        return Change(entries=[(parent.ino, p["name"])], inodes=[parent.ino, node.ino])

    def _drop_link(self, parent: Node, node: Node, time_ns: int) -> None:
        node.ctime_ns = time_ns
        node.version += 1
        if node.is_dir:
            parent.nlink -= 1
            node.nlink = 0
        else:
            node.nlink -= 1
            if node.nlink and node.parent == rules.SEVERAL_AREAS:
                links.settle_area(self, node)   # its links may all be in one area now
            elif node.nlink and node.parent == parent.ino and node.ino not in parent.entries.values():
                links.find_link(self, node, rules.area_root(self, parent.ino))
        self.release_orphan(node.ino)

    def release_orphan(self, ino: int) -> None:
        """Forget an inode that has no names left, unless it is still pinned."""
        node = self.nodes.get(ino)
        if node is not None and node.nlink == 0 and not self.is_pinned(ino):
            del self.nodes[ino]

    def _rename(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        old_parent = self.get_dir(p["parent"])
        new_parent = self.live_dir(p["new_parent"])
        name, new_name = p["name"], p["new_name"]
        check_name(new_name)
        node = self.child(old_parent.ino, name)
        if node.ino < events.INO_BASE:
            raise errors.NotPermitted(f"{self.path(old_parent.ino, name)} is part of the layout")
        target = self.find(new_parent.ino, new_name)
        if node.is_dir and self.is_ancestor(node.ino, new_parent.ino):
            raise errors.InvalidArgument("cannot move a directory into itself")
        if p.get("exchange"):
            if target is None:
                raise errors.NotFound(f"{self.path(new_parent.ino, new_name)}: no such entry")
            if target.is_dir and self.is_ancestor(target.ino, old_parent.ino):
                raise errors.InvalidArgument("cannot move a directory into itself")
            if not mutate:
                return None
            crossed = rules.area_root(self, old_parent.ino) != rules.area_root(self, new_parent.ino)
            old_parent.entries[name], new_parent.entries[new_name] = target.ino, node.ino
            for moved, dest in ((node, new_parent), (target, old_parent)):
                if moved.is_dir:
                    self.nodes[moved.parent].nlink -= 1
                    dest.nlink += 1
                if moved.parent != rules.SEVERAL_AREAS:
                    moved.parent = dest.ino
                moved.ctime_ns = time_ns
                moved.version += 1
            for moved in (node, target):
                links.settle_areas_below(self, moved, crossed)
        else:
            if target is not None:
                if p.get("noreplace"):
                    raise errors.Exists(f"{self.path(new_parent.ino, new_name)} exists")
                if target.ino == node.ino:
                    return Change() if mutate else None  # two names of one inode: POSIX says no-op
                if target.ino < events.INO_BASE:
                    raise errors.NotPermitted(f"{self.path(new_parent.ino, new_name)} is part of the layout")
                if node.is_dir and not target.is_dir:
                    raise errors.NotADirectory(f"{self.path(new_parent.ino, new_name)} is not a directory")
                if target.is_dir and not node.is_dir:
                    raise errors.IsADirectory(f"{self.path(new_parent.ino, new_name)} is a directory")
                if target.is_dir and target.entries:
                    raise errors.NotEmpty(f"{self.path(new_parent.ino, new_name)} is not empty")
            if not mutate:
                return None
            crossed = ((node.is_dir or node.nlink > 1)   # (only then can it matter: no walk per rename)
                       and rules.area_root(self, old_parent.ino) != rules.area_root(self, new_parent.ino))
            del old_parent.entries[name]
            if target is not None:
                del new_parent.entries[new_name]
                self._drop_link(new_parent, target, time_ns)
            new_parent.entries[new_name] = node.ino
            if node.is_dir:
                old_parent.nlink -= 1
                new_parent.nlink += 1
            if node.parent != rules.SEVERAL_AREAS:
                node.parent = new_parent.ino
            node.ctime_ns = time_ns
            node.version += 1
            links.settle_areas_below(self, node, crossed)
        self._touch_dir(old_parent, time_ns)
        self._touch_dir(new_parent, time_ns)
        change = Change(entries=[(old_parent.ino, name), (new_parent.ino, new_name)],
                        inodes=[old_parent.ino, new_parent.ino, node.ino])
        if target is not None:
            change.inodes.append(target.ino)
        return change

    def _setattr(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        node = self.get(p["ino"])
        for field in ("atime", "mtime"):
            if field in p:
                check_time(p[field])
        if not mutate:
            return None
        if "mode" in p:
            node.mode = stat.S_IFMT(node.mode) | (p["mode"] & 0o7777)
        for field in ("uid", "gid"):
            if field in p:
                setattr(node, field, p[field])
        if "atime" in p:
            node.atime_ns = p["atime"]
        if "mtime" in p:
            node.mtime_ns = p["mtime"]
        node.ctime_ns = time_ns
        node.version += 1
        return Change(inodes=[node.ino])

    def _write(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        node = self.get(p["ino"])
        if not stat.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"inode {node.ino} is not a regular file")
        if "mtime" in p:
            check_time(p["mtime"])
        if "base" in p and content_digest(node.size, node.chunks) != p["base"]:
            # An append made on content that another write replaced meanwhile: its
            # writer appends again onto what is there now.
            raise errors.LighthouseError(f"inode {node.ino} changed since this append was made on it")
        if not mutate:
            return None
        node.size = p["size"]
        node.chunks = pack(p["chunks"])
        node.mtime_ns = p.get("mtime", time_ns)
        node.ctime_ns = p.get("ctime", time_ns)   # when the write or truncate was made (files/writer.py)
        node.version += 1
        return Change(inodes=[node.ino])

    def _setxattr(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        node = self.get(p["ino"])
        total = sum(len(k) + 1 + len(v) for k, v in (node.xattrs or {}).items() if k != p["name"])
        total += len(p["name"]) + 1 + len(p["value"])
        if total > XATTRS_TOTAL_MAX:
            raise errors.LighthouseError(f"inode {node.ino}: extended attributes would take {total} bytes "
                                         f"(at most {XATTRS_TOTAL_MAX})", errno_=errno.ENOSPC)
        if not mutate:
            return None
        if node.xattrs is None:
            node.xattrs = {}
        node.xattrs[p["name"]] = p["value"]
        node.ctime_ns = time_ns
        node.version += 1
        return Change(inodes=[node.ino])

    def _removexattr(self, p: dict, seq: int, time_ns: int, mutate: bool) -> Change | None:
        node = self.get(p["ino"])
        if not node.xattrs or p["name"] not in node.xattrs:
            raise errors.NoAttribute(f"inode {node.ino} has no attribute {p['name']!r}")
        if not mutate:
            return None
        del node.xattrs[p["name"]]
        node.ctime_ns = time_ns
        node.version += 1
        return Change(inodes=[node.ino])

    @staticmethod
    def _touch_dir(directory: Node, time_ns: int) -> None:
        directory.mtime_ns = directory.ctime_ns = time_ns
        directory.version += 1
