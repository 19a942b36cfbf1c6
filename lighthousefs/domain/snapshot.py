"""Snapshots of the projection: the whole tree in one checksummed blob, so that a start
loads it and replays only the events after it. Pure: bytes in, bytes out."""
from __future__ import annotations

import hashlib
import itertools
import operator

from typing import Iterator

import msgpack

from .chunks import pack
from .node import _SHARED_INTS, Node
from .tree import Tree

# A snapshot is this magic, the SHA-256 of the rest, then the msgpack'd tree: an array
# of its format's version, the seq of the last event applied, and the nodes. SHA-256
# rather than BLAKE2b: CPUs compute it in hardware, 3x faster on a 100 MB snapshot.
SNAPSHOT_MAGIC = b"LHSNAP1\n"
SNAPSHOT_SUM_SIZE = 32
# Version 1: one row (Node.dump) per node. Version 2 (written since): one column per
# field, so msgpack decodes each in C and the loop of a start only builds the nodes
# (1M files: 4.6 CPU s to load before, see docs/decisions.md). Both are read.
VERSION = 2


class UncheckedSnapshot(ValueError):
    """A snapshot without a checksum (stored before they had one): not trusted."""


def dump(tree: Tree) -> bytes:
    """The whole projection, for a snapshot. Orphans (open but unlinked) are left out.

    May run in a worker thread while no event is applied: the filesystem may still
    drop orphans from `nodes` meanwhile, so the dump walks a copy of its values (one
    C call, atomic under the GIL). Sealed with a checksum: a damaged snapshot is
    refused by load(), never served."""
    live = [node for node in list(tree.nodes.values()) if node.nlink > 0]
    # Grouped by parent, so that the parents are runs: load hands every file of a
    # directory the one int object of its inode number, with no int decoded per file.
    live.sort(key=operator.attrgetter("parent"))
    column = _column(live)
    mtimes = column("mtime_ns")
    # (Each step a C loop over the nodes where it can be: the dump holds back commits.)
    entries = column("entries")
    dirs = [(i, list(entries[i]), list(entries[i].values())) for i in _where(entries, itertools.repeat(None))]
    columns = [len(live), column("ino"), *_table(column("mode")), *_table(column("uid")), *_table(column("gid")),
               column("nlink"), column("size"), mtimes,
               _sparse(column("atime_ns"), mtimes), _sparse(column("ctime_ns"), mtimes),
               _sparse(column("rdev"), itertools.repeat(0)), column("chunks"),
               _sparse(column("target"), itertools.repeat(b"")), _sparse(column("xattrs"), itertools.repeat(None)),
               dirs, [[parent, len(list(run))] for parent, run in itertools.groupby(column("parent"))]]
    body = msgpack.packb([VERSION, tree.applied_seq, columns], use_bin_type=True)
    return b"".join((SNAPSHOT_MAGIC, hashlib.sha256(body).digest(), body))


def _column(nodes: list[Node]):
    return lambda field: list(map(operator.attrgetter(field), nodes))


def _table(values: list) -> tuple[list, list[int]]:
    """Few distinct values (modes, owners): a table of them and an index per node, each
    index a small int, which CPython never allocates (decoded ints would be)."""
    table = list(dict.fromkeys(values))
    if len(table) == 1:
        return table, [0] * len(values)
    index = {value: i for i, value in enumerate(table)}
    return table, list(map(index.__getitem__, values))


def _sparse(values: list, usual) -> dict[int, object]:
    """The positions where a column differs from `usual` (times: from mtime)."""
    return {i: values[i] for i in _where(values, usual)}


def _where(values: list, usual) -> Iterator[int]:
    return itertools.compress(range(len(values)), map(operator.ne, values, usual))


def load(blob: bytes) -> Tree:
    """The tree of a snapshot; ValueError if it is damaged (its checksum does not
    match) or of an unknown or unchecked (older) format."""
    head = len(SNAPSHOT_MAGIC) + SNAPSHOT_SUM_SIZE
    if not blob.startswith(SNAPSHOT_MAGIC):
        raise UncheckedSnapshot("a snapshot of an older format, without a checksum")
    body = memoryview(blob)[head:]
    if hashlib.sha256(body).digest() != blob[len(SNAPSHOT_MAGIC):head]:
        raise ValueError("damaged snapshot: its checksum does not match")
    # Piece by piece rather than unpackb: see _load_rows.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False,
                                max_buffer_size=len(body) + 1)
    unpacker.feed(body)
    try:
        if unpacker.read_array_header() != 3:
            raise ValueError("not a snapshot")
        version = unpacker.unpack()
        if version not in (1, 2):
            raise ValueError(f"unknown snapshot version {version}")
        tree = Tree.__new__(Tree)
        tree.is_pinned = lambda ino: False
        tree.applied_seq = tree.snapshot_seq = unpacker.unpack()
        tree.nodes = {}
        (_load_rows if version == 1 else _load_columns)(unpacker, tree.nodes)
    except (msgpack.OutOfData, msgpack.FormatError, msgpack.StackError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"damaged snapshot: {exc!r}") from None
    return tree


def _load_columns(unpacker: msgpack.Unpacker, nodes: dict[int, Node]) -> None:
    if unpacker.read_array_header() != 19:
        raise ValueError("damaged snapshot: not the columns of version 2")
    count, inos = unpacker.unpack(), unpacker.unpack()
    modes, uids, gids = (_untable(unpacker, _SHARED_INTS.setdefault) for _ in range(3))
    nlinks, sizes, mtimes = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    atimes, ctimes, rdevs = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    chunks, targets, xattrs = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    dirs, runs = unpacker.unpack(), unpacker.unpack()
    # Each directory's inode number as the one int object its children's parent is.
    canonical = {inos[i]: inos[i] for i, _, _ in dirs}
    parents: list[int] = []
    for parent, length in runs:
        parents.extend(itertools.repeat(canonical.get(parent, parent), length))
    if any(len(c) != count for c in (inos, modes, uids, gids, nlinks, sizes, mtimes, chunks, parents)):
        raise ValueError("damaged snapshot: columns of different lengths")
    # The loop of a start: 1M files take a second or two. Inline (no call per node);
    # the rare fields afterwards, from their sparse columns.
    nodes.update(dict.fromkeys(inos))   # sized once, filled in place
    new = Node.__new__
    for ino, mode, uid, gid, nlink, size, mtime, chunk_list, parent in zip(
            inos, modes, uids, gids, nlinks, sizes, mtimes, chunks, parents):
        node = new(Node)
        node.ino = ino
        node.mode = mode
        node.uid = uid
        node.gid = gid
        node.rdev = 0
        node.nlink = nlink
        node.size = size
        node.atime_ns = node.mtime_ns = node.ctime_ns = mtime   # one int object for equal times
        node.chunks = chunk_list
        node.target = b""
        node.xattrs = None
        node.entries = None
        node.parent = parent
        node.version = 0
        nodes[ino] = node
    for field, sparse in (("atime_ns", atimes), ("ctime_ns", ctimes), ("rdev", rdevs), ("target", targets),
                          ("xattrs", xattrs)):
        for i, value in sparse.items():
            setattr(nodes[inos[i]], field, value)
    get_ino = operator.attrgetter("ino")
    for i, names, children in dirs:   # refer to each inode number by one int object
        nodes[inos[i]].entries = dict(zip(names, map(get_ino, map(nodes.__getitem__, children))))


def _untable(unpacker: msgpack.Unpacker, share) -> list:
    table = tuple(map(share, *itertools.repeat(unpacker.unpack(), 2)))
    indices = unpacker.unpack()
    if len(table) == 1:   # all alike (owners, often)
        return [table[0]] * len(indices)
    return list(map(table.__getitem__, indices))


def _load_rows(unpacker: msgpack.Unpacker, nodes: dict[int, Node]) -> None:
    """Version 1: row by row rather than unpackb: unpacking the whole list at once
    leaves the freed rows interleaved with the nodes in the allocator's arenas, about
    0.3 KiB per file that is never given back (28 MiB at 100k files)."""
    dirs = []
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
