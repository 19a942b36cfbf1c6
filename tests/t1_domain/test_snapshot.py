"""Snapshots: dump -> load gives back every field of every node; a damaged snapshot is
refused by its checksum."""
from __future__ import annotations

import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lighthousefs.domain import events, snapshot
from lighthousefs.domain.node import Node
from lighthousefs.domain.tree import PROJECTS_INO, Tree



FIELDS = [f for f in Node.__slots__ if f != "version"]   # version counts changes since the load
ints = st.integers(min_value=0, max_value=2**63 - 1)
times = st.integers(min_value=-2**63, max_value=2**63 - 1)
node_spec = st.tuples(
    st.sampled_from(["dir", "file", "link", "symlink", "fifo"]),
    st.integers(min_value=0, max_value=1000),     # which directory (or file, for a link)
    st.binary(min_size=1, max_size=12).filter(lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")),
    st.sampled_from([0, 1000, 65534, 2**31]),      # uid and gid
    st.integers(min_value=0, max_value=0o7777),
    st.tuples(times, times, times) | times.map(lambda t: (t, t, t)),
    ints,
    st.binary(max_size=60),                       # chunks
    st.none() | st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=8), max_size=3),
)


def build(specs) -> Tree:
    tree = Tree()
    tree.applied_seq = 77
    dirs, files = [PROJECTS_INO], []
    ino = events.INO_BASE
    for kind, which, name, owner, perm, (atime, mtime, ctime), size, chunks, xattrs in specs:
        parent = tree.nodes[dirs[which % len(dirs)]]
        if name in parent.entries:
            continue
        if kind == "link":
            if not files:
                continue
            node = tree.nodes[files[which % len(files)]]
            node.nlink += 1
            parent.entries[name] = node.ino
            continue
        ino += 1
        mode = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO}[kind]
        node = Node(ino, mode | perm, owner, owner + 1, mtime)
        node.atime_ns, node.ctime_ns = atime, ctime
        node.parent = parent.ino
        node.xattrs = xattrs
        if kind == "dir":
            parent.nlink += 1
            dirs.append(ino)
        elif kind == "symlink":
            node.target, node.size = name * 3, len(name) * 3
        elif kind == "fifo":
            node.rdev = size % 2**32
        else:
            node.size, node.chunks = size, chunks
            files.append(ino)
        tree.nodes[ino] = node
        parent.entries[name] = ino
    return tree


def fields(tree: Tree) -> dict:
    return {ino: {f: getattr(node, f) for f in FIELDS} for ino, node in tree.nodes.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(node_spec, max_size=40))
def test_dump_load_round_trips_every_field(specs):
    tree = build(specs)
    loaded = snapshot.load(snapshot.dump(tree))
    assert fields(loaded) == fields(tree)
    assert loaded.applied_seq == loaded.snapshot_seq == tree.applied_seq
    assert all(node.version == 0 for node in loaded.nodes.values())
    # One int object per inode number, whichever entry refers to it.
    for node in loaded.nodes.values():
        for ino in (node.entries or {}).values():
            assert ino is loaded.nodes[ino].ino
    assert fields(snapshot.load(snapshot.dump(loaded))) == fields(tree)


def test_orphans_are_left_out():
    tree = build([("file", 0, b"f", 0, 0o644, (1, 1, 1), 3, b"x" * 20, None)])
    [ino] = tree.nodes[PROJECTS_INO].entries.values()
    del tree.nodes[PROJECTS_INO].entries[b"f"]
    tree.nodes[ino].nlink = 0
    assert ino not in snapshot.load(snapshot.dump(tree)).nodes


@settings(max_examples=60, deadline=None)
@given(st.lists(node_spec, min_size=1, max_size=10), st.data())
def test_a_damaged_snapshot_is_refused(specs, data):
    blob = bytearray(snapshot.dump(build(specs)))
    at = data.draw(st.integers(min_value=len(snapshot.SNAPSHOT_MAGIC), max_value=len(blob) - 1))
    blob[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(ValueError, match="checksum"):
        snapshot.load(bytes(blob))
