"""The projection: the current namespace, built by applying events in order.

Pure: no FUSE, no store, no clock (times come from events). Every check that decides
whether an event is valid runs twice with the same code: before the event is
appended (the caller gets the errno) and when it is applied (an event that has become
invalid in between, because another producer got there first, is skipped the same way
on every node and on every replay).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import operator
import stat
from typing import Callable, Iterator

import msgpack

from .. import errors
from . import events, rules
from .chunks import content_digest, pack
from .events import Event
from .layout import AGENTS_INO, MEMORIES_INO, PROJECTS_INO, ROOT_INO, SHARED_MEMORIES_INO  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


NAME_MAX = 255
# Times are stored as int64 nanoseconds (about 1677-09-21 to 2262-04-11): a time outside
# that range cannot be stored and is refused (EINVAL), not clamped (docs/decisions.md).
TIME_NS_MIN, TIME_NS_MAX = -2**63, 2**63 - 1
# What one file's extended attributes may take in all, each name counted with the NUL
# that listxattr puts after it: so listxattr and getxattr always fit the kernel's 64 KiB
# limits (past them they fail with E2BIG). A setxattr past it gets ENOSPC, as on ext4.
XATTRS_TOTAL_MAX = 64 * 1024

# A snapshot is this magic, the SHA-256 of the rest, then the msgpack'd tree. SHA-256
# rather than BLAKE2b: CPUs compute it in hardware, 3x faster on a 100 MB snapshot.
SNAPSHOT_MAGIC = b"LHSNAP1\n"
SNAPSHOT_SUM_SIZE = 32


class UncheckedSnapshot(ValueError):
    """A snapshot without a checksum (stored before they had one): not trusted."""


class Node:
    """One inode. Directories have `entries` and a single `parent`; for any other node,
    `parent` is a directory it is linked in (one of them, if it has several: they are
    all in one area), so the rules know where it is now (rules.area_of)."""

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
        # Read back by Tree.load, field by field.
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


class Tree:
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

    # ---- queries -------------------------------------------------------------------

    def get(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise errors.NotFound(f"no inode {ino}") from None

    def get_dir(self, ino: int) -> Node:
        node = self.get(ino)
        if not node.is_dir:
            raise errors.NotADirectory(f"inode {ino} is not a directory")
        return node

    def live_dir(self, ino: int) -> Node:
        """A directory that entries may be added to: not one that was removed and is only
        kept here because this node's kernel still holds it (a shell's cwd). Replays
        and other nodes do not have such a directory at all, so every node must refuse
        it alike."""
        directory = self.get_dir(ino)
        if directory.nlink == 0:
            raise errors.NotFound(f"directory {ino} has been removed")
        return directory

    def child(self, parent: int, name: bytes) -> Node:
        directory = self.get_dir(parent)
        ino = directory.entries.get(name)
        if ino is None:
            raise errors.NotFound(f"{self.path(parent, name)}: no such entry")
        return self.nodes[ino]

    def find(self, parent: int, name: bytes) -> Node | None:
        directory = self.nodes.get(parent)
        if directory is None or directory.entries is None:
            return None
        ino = directory.entries.get(name)
        return None if ino is None else self.nodes[ino]

    def resolve(self, path: str) -> Node:
        """The node at a slash-separated path from the root (no symlinks followed)."""
        node = self.nodes[ROOT_INO]
        for part in path.strip("/").split("/"):
            if part:
                node = self.child(node.ino, part.encode("utf-8", events.PATH_ERRORS))
        return node

    def dir_path(self, ino: int) -> str:
        parts = []
        while ino != ROOT_INO:
            node = self.nodes.get(ino)
            if node is None or not node.is_dir:
                return f"?inode-{ino}"
            parent = self.nodes[node.parent]
            name = next((n for n, i in parent.entries.items() if i == ino), b"?")
            parts.append(name.decode("utf-8", "surrogateescape"))
            ino = node.parent
        return "/".join(reversed(parts))

    def path(self, parent: int, name: bytes) -> str:
        base = self.dir_path(parent)
        leaf = name.decode("utf-8", "surrogateescape")
        return f"{base}/{leaf}" if base else leaf

    def is_ancestor(self, ancestor: int, ino: int) -> bool:
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT_INO:
                return False
            ino = self.nodes[ino].parent

    def walk(self, ino: int = ROOT_INO) -> Iterator[Node]:
        stack = [ino]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            if node.is_dir:
                stack.extend(node.entries.values())

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
        # A file created with its content has the times of its last write (files/writer.py).
        node.mtime_ns = p.get("mtime", time_ns)
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
            if node.nlink and node.parent == parent.ino and node.ino not in parent.entries.values():
                self._find_link(node, rules.area_root(self, parent.ino))
        self.release_orphan(node.ino)

    def _find_link(self, node: Node, near: int | None) -> None:
        """The directory `node.parent` names lost its link to `node`, which has others:
        name one of those (searched in its area first, where links stay). Rare: only a
        hard-linked file loses the link it was recorded by."""
        for top in ((near,) if near is not None else ()) + (ROOT_INO,):
            for directory in self.walk(top):
                if directory.is_dir and node.ino in directory.entries.values():
                    node.parent = directory.ino
                    return

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
            old_parent.entries[name], new_parent.entries[new_name] = target.ino, node.ino
            for moved, dest in ((node, new_parent), (target, old_parent)):
                if moved.is_dir:
                    self.nodes[moved.parent].nlink -= 1
                    dest.nlink += 1
                moved.parent = dest.ino
                moved.ctime_ns = time_ns
                moved.version += 1
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
            del old_parent.entries[name]
            if target is not None:
                del new_parent.entries[new_name]
                self._drop_link(new_parent, target, time_ns)
            new_parent.entries[new_name] = node.ino
            if node.is_dir:
                old_parent.nlink -= 1
                new_parent.nlink += 1
            node.parent = new_parent.ino
            node.ctime_ns = time_ns
            node.version += 1
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

    # ---- snapshots -----------------------------------------------------------------

    def dump(self) -> bytes:
        """The whole projection, for a snapshot. Orphans (open but unlinked) are left out.

        May run in a worker thread while no event is applied: the filesystem may still
        drop orphans from `nodes` meanwhile, so the dump walks a copy of its values (one
        C call, atomic under the GIL). Sealed with a checksum: a damaged snapshot is
        refused by load(), never served."""
        live = [node for node in list(self.nodes.values()) if node.nlink > 0]
        # Row by row into one buffer: each row's list is garbage at once, instead of a
        # million of them at the end (a daemon with 1M files grew by 127 MiB at its
        # first snapshot, now by 92, most of it the blob's pages kept by malloc).
        packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        packer.pack_array_header(3)
        packer.pack(1)
        packer.pack(self.applied_seq)
        packer.pack_array_header(len(live))
        for node in live:
            packer.pack(node.dump())
        body = packer.bytes()
        return b"".join((SNAPSHOT_MAGIC, hashlib.sha256(body).digest(), body))

    @classmethod
    def load(cls, blob: bytes) -> "Tree":
        """The tree of a snapshot; ValueError if it is damaged (its checksum does not
        match) or of an unknown or unchecked (older) format."""
        head = len(SNAPSHOT_MAGIC) + SNAPSHOT_SUM_SIZE
        if not blob.startswith(SNAPSHOT_MAGIC):
            raise UncheckedSnapshot("a snapshot of an older format, without a checksum")
        body = memoryview(blob)[head:]
        if hashlib.sha256(body).digest() != blob[len(SNAPSHOT_MAGIC):head]:
            raise ValueError("damaged snapshot: its checksum does not match")
        # Row by row rather than unpackb: unpacking the whole list at once leaves the
        # freed rows interleaved with the nodes in the allocator's arenas, about 0.3 KiB
        # per file that is never given back (28 MiB at 100k files).
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False,
                                    max_buffer_size=len(body) + 1)
        unpacker.feed(body)
        try:
            if unpacker.read_array_header() != 3:
                raise ValueError("not a snapshot")
            version = unpacker.unpack()
            if version != 1:
                raise ValueError(f"unknown snapshot version {version}")
            tree = cls.__new__(cls)
            tree.is_pinned = lambda ino: False
            tree.applied_seq = tree.snapshot_seq = unpacker.unpack()
            nodes = tree.nodes = {}
            dirs = []
            # The loop of a start: 1M files take seconds. Inline (no call per node),
            # and the layout of Node.dump.
            new, unpack, shared = Node.__new__, unpacker.unpack, _SHARED_INTS.setdefault
            parents: dict[int, int] = {}   # one int object per directory for the files in it
            share_parent = parents.setdefault
            for _ in range(unpacker.read_array_header()):
                node = new(Node)
                (ino, mode, node.uid, node.gid, node.rdev, node.nlink, node.size, atime, mtime, ctime,
                 chunks, node.target, node.xattrs, entries, parent) = unpack()
                node.parent = share_parent(parent, parent)
                node.ino = ino
                node.mode = shared(mode, mode)
                # One int object for equal times, not two or three (megabytes at 100k files).
                node.mtime_ns = mtime
                node.atime_ns = mtime if atime == mtime else atime
                node.ctime_ns = mtime if ctime == mtime else ctime
                node.chunks = chunks if chunks.__class__ is bytes else pack(chunks)
                node.entries = entries
                node.version = 0
                nodes[ino] = node
                if entries is not None:
                    dirs.append(node)
            get_ino = operator.attrgetter("ino")
            for node in dirs:   # refer to each inode number by one int object
                node.parent = nodes[node.parent].ino
                node.entries = dict(zip(node.entries, map(get_ino, map(nodes.__getitem__, node.entries.values()))))
            if 0 in parents:
                # A snapshot from before files had a parent (they hold 0): the directory
                # of a link, found once (the next snapshot stores it).
                for node in dirs:
                    for child in map(nodes.__getitem__, node.entries.values()):
                        if not child.parent:
                            child.parent = node.ino
        except (msgpack.OutOfData, msgpack.FormatError, msgpack.StackError) as exc:
            raise ValueError(f"damaged snapshot: {exc}") from None
        return tree
