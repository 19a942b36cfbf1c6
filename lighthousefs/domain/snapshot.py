"""Snapshots of the projection: the whole tree in one checksummed blob, so that a start
loads it and replays only the events after it. Pure: bytes in, bytes out."""
from __future__ import annotations

import hashlib
import operator

import msgpack

from . import rules
from .chunks import pack
from .node import _SHARED_INTS, Node
from .tree import Tree

# A snapshot is this magic, the SHA-256 of the rest, then the msgpack'd tree. SHA-256
# rather than BLAKE2b: CPUs compute it in hardware, 3x faster on a 100 MB snapshot.
SNAPSHOT_MAGIC = b"LHSNAP1\n"
SNAPSHOT_SUM_SIZE = 32


class UncheckedSnapshot(ValueError):
    """A snapshot without a checksum (stored before they had one): not trusted."""


def dump(tree: Tree) -> bytes:
    """The whole projection, for a snapshot. Orphans (open but unlinked) are left out.

    May run in a worker thread while no event is applied: the filesystem may still
    drop orphans from `nodes` meanwhile, so the dump walks a copy of its values (one
    C call, atomic under the GIL). Sealed with a checksum: a damaged snapshot is
    refused by load(), never served."""
    live = [node for node in list(tree.nodes.values()) if node.nlink > 0]
    # Row by row into one buffer: each row's list is garbage at once, instead of a
    # million of them at the end (a daemon with 1M files grew by 127 MiB at its
    # first snapshot, now by 92, most of it the blob's pages kept by malloc).
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_array_header(3)
    packer.pack(1)
    packer.pack(tree.applied_seq)
    packer.pack_array_header(len(live))
    for node in live:
        packer.pack(node.dump())
    body = packer.bytes()
    return b"".join((SNAPSHOT_MAGIC, hashlib.sha256(body).digest(), body))


def load(blob: bytes) -> Tree:
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
        tree = Tree.__new__(Tree)
        tree.is_pinned = lambda ino: False
        tree.applied_seq = tree.snapshot_seq = unpacker.unpack()
        nodes = tree.nodes = {}
        dirs, linked = [], []   # linked: files with more than one name
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
            elif node.nlink > 1:
                linked.append(node)
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
        if linked:
            _mark_several_areas(tree, linked, dirs)
    except (msgpack.OutOfData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"damaged snapshot: {exc}") from None
    return tree


def _mark_several_areas(tree: Tree, linked: list[Node], dirs: list[Node]) -> None:
    """A file linked in more than one area is SEVERAL_AREAS, as a replay from the start
    makes it (a snapshot from before the mark, or from before files had a parent, names
    one of its directories)."""
    areas: dict[int, set] = {node.ino: set() for node in linked}
    for directory in dirs:
        for ino in directory.entries.values():
            if ino in areas:
                areas[ino].add(rules.area_root(tree, directory.ino))
    for node in linked:
        if len(areas[node.ino]) > 1:
            node.parent = rules.SEVERAL_AREAS
