"""The projection, driven by events directly: no FUSE, no store."""
from __future__ import annotations

import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lighthousefs import errors
from lighthousefs.domain import events, snapshot
from lighthousefs.domain.events import Draft, Event
from lighthousefs.domain.tree import PROJECTS_INO, Tree

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755


class Log:
    """A tree plus the events that built it, as the journal would append them.

    These tests are about the tree's structure, so their events are of the encoding
    before the rules (version 1), which every node applies without them as it always
    did: files may sit directly in projects/. The rules have their own tests
    (test_rules.py)."""

    def __init__(self):
        self.tree = Tree()
        self.events: list[Event] = []

    def do(self, type_: str, **payload) -> int:
        draft = Draft(type_, "projects/x", payload)
        self.tree.check(draft)
        event = Event(len(self.events) + 1, 1000 + len(self.events), "test", type_, draft.path, payload, 1)
        self.events.append(event)
        assert self.tree.apply(event) is not None
        return events.ino_for_seq(event.seq)

    def mk(self, parent: int, name: bytes, mode=FILE) -> int:
        return self.do(events.MKNOD, parent=parent, name=name, mode=mode)


def state(tree: Tree) -> dict:
    return {ino: node.dump() for ino, node in tree.nodes.items()}


def attributes(node) -> tuple:
    """What stat(2) shows of a node."""
    return (node.mode, node.nlink, node.uid, node.gid, node.rdev, node.size,
            node.atime_ns, node.mtime_ns, node.ctime_ns)


def test_create_lookup_unlink():
    log = Log()
    project = log.mk(PROJECTS_INO, b"p", DIR)
    f = log.mk(project, b"a.txt")
    assert log.tree.child(project, b"a.txt").ino == f
    assert log.tree.nodes[project].nlink == 2
    log.do(events.UNLINK, parent=project, name=b"a.txt")
    assert f not in log.tree.nodes
    with pytest.raises(errors.NotFound):
        log.tree.child(project, b"a.txt")


@pytest.mark.parametrize("name, error", [
    (b"", errors.InvalidArgument), (b"a/b", errors.InvalidArgument), (b"a\0b", errors.InvalidArgument),
    (b"..", errors.InvalidArgument), (b"x" * 256, errors.NameTooLong)])
def test_bad_names(name, error):
    with pytest.raises(error):
        Log().mk(PROJECTS_INO, name, DIR)


def test_name_of_255_bytes_is_fine():
    Log().mk(PROJECTS_INO, b"x" * 255, DIR)


def test_rmdir_of_non_empty_directory():
    log = Log()
    project = log.mk(PROJECTS_INO, b"p", DIR)
    log.mk(project, b"f")
    with pytest.raises(errors.NotEmpty):
        log.do(events.UNLINK, parent=PROJECTS_INO, name=b"p")


def test_rename_into_itself_is_refused():
    log = Log()
    a = log.mk(PROJECTS_INO, b"a", DIR)
    b = log.mk(a, b"b", DIR)
    with pytest.raises(errors.InvalidArgument):
        log.do(events.RENAME, parent=PROJECTS_INO, name=b"a", new_parent=b, new_name=b"a")


def test_rename_over_file_and_directory_rules():
    log = Log()
    p = log.mk(PROJECTS_INO, b"p", DIR)
    f = log.mk(p, b"f")
    g = log.mk(p, b"g")
    d = log.mk(p, b"d", DIR)
    log.mk(d, b"inside")
    e = log.mk(p, b"e", DIR)
    with pytest.raises(errors.IsADirectory):
        log.do(events.RENAME, parent=p, name=b"f", new_parent=p, new_name=b"d")
    with pytest.raises(errors.NotADirectory):
        log.do(events.RENAME, parent=p, name=b"e", new_parent=p, new_name=b"f")
    with pytest.raises(errors.NotEmpty):
        log.do(events.RENAME, parent=p, name=b"e", new_parent=p, new_name=b"d")
    with pytest.raises(errors.Exists):
        log.do(events.RENAME, parent=p, name=b"f", new_parent=p, new_name=b"g", noreplace=True)
    log.do(events.RENAME, parent=p, name=b"f", new_parent=p, new_name=b"g")
    assert log.tree.child(p, b"g").ino == f and g not in log.tree.nodes
    log.do(events.RENAME, parent=p, name=b"e", new_parent=d, new_name=b"e2")
    assert log.tree.nodes[e].parent == d and log.tree.nodes[d].nlink == 3 and log.tree.nodes[p].nlink == 3


def test_exchange_swaps_entries():
    log = Log()
    p = log.mk(PROJECTS_INO, b"p", DIR)
    f, d = log.mk(p, b"f"), log.mk(p, b"d", DIR)
    log.do(events.RENAME, parent=p, name=b"f", new_parent=p, new_name=b"d", exchange=True)
    assert log.tree.child(p, b"f").ino == d and log.tree.child(p, b"d").ino == f


def test_hard_links_count_and_survive_unlink():
    log = Log()
    p = log.mk(PROJECTS_INO, b"p", DIR)
    f = log.mk(p, b"f")
    log.do(events.LINK, ino=f, parent=p, name=b"g")
    assert log.tree.nodes[f].nlink == 2
    log.do(events.UNLINK, parent=p, name=b"f")
    assert log.tree.child(p, b"g").ino == f and log.tree.nodes[f].nlink == 1


def test_pinned_orphan_stays_until_released():
    log = Log()
    p = log.mk(PROJECTS_INO, b"p", DIR)
    f = log.mk(p, b"f")
    pinned = {f}
    log.tree.is_pinned = pinned.__contains__
    log.do(events.UNLINK, parent=p, name=b"f")
    assert log.tree.nodes[f].nlink == 0
    pinned.clear()
    log.tree.release_orphan(f)
    assert f not in log.tree.nodes


def test_layout_cannot_be_removed():
    log = Log()
    with pytest.raises(errors.NotPermitted):
        log.do(events.UNLINK, parent=1, name=b"projects")


def test_annotation_events_change_nothing():
    tree = Tree()
    tree.apply(Event(1, 1, "a", "task.started", "projects/x", {"k": 1}))
    before = state(tree)
    assert tree.apply(Event(2, 2, "a", "task.done", "projects/x", {"k": 1})) is not None
    assert state(tree) == before and tree.applied_seq == 2


def test_event_that_no_longer_fits_is_skipped_alike_everywhere():
    tree = Tree()
    mk = {"parent": PROJECTS_INO, "name": b"same", "mode": DIR}
    assert tree.apply(Event(1, 1, "a", events.MKNOD, "projects/same", mk)) is not None
    assert tree.apply(Event(2, 2, "b", events.MKNOD, "projects/same", mk)) is None
    assert tree.child(PROJECTS_INO, b"same").ino == events.ino_for_seq(1)


def test_events_round_trip_through_msgpack():
    draft = Draft(events.WRITE, "projects/x/f", {"ino": 1001, "size": 3, "chunks": [b"\x01" * 20]}, "agent-7")
    event = events.decode(9, events.encode(123, draft))
    assert event == Event(9, 123, "agent-7", events.WRITE, "projects/x/f", draft.payload)
    assert b'"seq":9' in event.to_json_line() and b"chunks" not in event.to_json_line()


names = st.sampled_from([b"a", b"b", b"c", b"d"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["file", "dir", "unlink", "rename", "link", "chmod", "write"]),
                          names, names, st.integers(0, 3)), max_size=40))
def test_replay_and_snapshot_rebuild_the_same_tree(ops):
    """Live state == replay of the log == snapshot + replay of the rest."""
    log = Log()
    dirs = [PROJECTS_INO]
    for kind, name, other, pick in ops:
        before = {ino: (node.version, attributes(node)) for ino, node in log.tree.nodes.items()}
        parent = dirs[pick % len(dirs)]
        target_dir = dirs[(pick + 1) % len(dirs)]
        try:
            if kind == "file":
                log.mk(parent, name)
            elif kind == "dir":
                dirs.append(log.mk(parent, name, DIR))
            elif kind == "unlink":
                log.do(events.UNLINK, parent=parent, name=name)
            elif kind == "rename":
                log.do(events.RENAME, parent=parent, name=name, new_parent=target_dir, new_name=other)
            elif kind == "link":
                log.do(events.LINK, ino=log.tree.child(parent, name).ino, parent=target_dir, name=other)
            elif kind == "chmod":
                log.do(events.SETATTR, ino=log.tree.child(parent, name).ino, mode=0o600)
            else:
                log.do(events.WRITE, ino=log.tree.child(parent, name).ino, size=3, chunks=[b"h" * 20])
        except errors.LighthouseError:
            pass
        dirs = [d for d in dirs if d in log.tree.nodes]
        # The filesystem reuses attribute objects while a node's version is unchanged.
        for ino, (version, attrs) in before.items():
            node = log.tree.nodes.get(ino)
            if node is not None and attributes(node) != attrs:
                assert node.version != version, f"inode {ino} changed without a new version"
    replayed = Tree()
    for event in log.events:
        replayed.apply(event)
    assert state(replayed) == state(log.tree)
    half = len(log.events) // 2
    partial = Tree()
    for event in log.events[:half]:
        partial.apply(event)
    resumed = snapshot.load(snapshot.dump(partial))
    for event in log.events[half:]:
        resumed.apply(event)
    assert state(resumed) == state(log.tree)
    # Directory link counts are what POSIX says: 2 + subdirectories.
    for node in log.tree.nodes.values():
        if node.is_dir:
            subdirs = sum(1 for i in node.entries.values() if log.tree.nodes[i].is_dir)
            assert node.nlink == 2 + subdirs


@pytest.mark.parametrize("blob", [b"", b"\x93\x01", b"not msgpack at all", b"\x92\x01\x02",
                                  b"\x93\x02\x00\x90"])
def test_damaged_or_unknown_snapshot_is_refused(blob):
    with pytest.raises(ValueError):
        snapshot.load(blob)


def test_snapshot_shares_inode_numbers_between_entries_and_nodes():
    log = Log()
    directory = log.mk(PROJECTS_INO, b"d", DIR)
    log.mk(directory, b"f")
    loaded = snapshot.load(snapshot.dump(log.tree))
    for node in loaded.nodes.values():
        for ino in (node.entries or {}).values():
            assert ino is loaded.nodes[ino].ino


def test_a_create_may_name_an_inode_from_a_reserved_range():
    log = Log()
    reserved = events.inode_range(log.do(events.INODES, count=events.INO_RANGE) - events.INO_BASE)
    log.do(events.MKNOD, parent=PROJECTS_INO, name=b"new", mode=FILE, ino=reserved[0], size=3, chunks=[])
    node = log.tree.child(PROJECTS_INO, b"new")
    assert node.ino == reserved[0] and node.size == 3
    # Taken, outside every range, or not a number: refused now and skipped on replay.
    for ino, error in ((reserved[0], errors.Exists), (events.ino_for_seq(5), errors.InvalidArgument),
                       (1 << 62, errors.InvalidArgument), ("1", errors.InvalidArgument)):
        draft = Draft(events.MKNOD, "projects/other", dict(parent=PROJECTS_INO, name=b"other", mode=FILE, ino=ino))
        with pytest.raises(error):
            log.tree.check(draft)
        assert log.tree.apply(Event(100 + len(log.events), 0, "t", events.MKNOD, draft.path, draft.payload)) is None
        log.events.append(None)


def test_reserved_ranges_are_disjoint_and_above_sequence_inodes():
    first, second = events.inode_range(1), events.inode_range(2)
    assert first.stop == second.start and len(first) == events.INO_RANGE
    assert events.ino_for_seq((1 << 40) - events.INO_BASE - 1) < events.inode_range(0).start
    assert events.is_reserved_ino(first[0]) and not events.is_reserved_ino(events.ino_for_seq(10**9))


def test_nothing_is_added_to_a_removed_directory_kept_for_the_kernel():
    """A removed directory that this node's kernel still holds (a shell's cwd) stays in
    the tree, but replays and other nodes do not have it: entries added to it must be
    refused the same way everywhere."""
    log = Log()
    pinned: set[int] = set()
    log.tree.is_pinned = lambda ino: ino in pinned
    d = log.mk(PROJECTS_INO, b"d", DIR)
    f = log.mk(PROJECTS_INO, b"f")
    pinned.add(d)
    log.do(events.UNLINK, parent=PROJECTS_INO, name=b"d")
    assert d in log.tree.nodes   # kept for the kernel
    for type_, payload in ((events.MKNOD, dict(parent=d, name=b"x", mode=FILE)),
                           (events.LINK, dict(ino=f, parent=d, name=b"x")),
                           (events.RENAME, dict(parent=PROJECTS_INO, name=b"f", new_parent=d, new_name=b"x"))):
        with pytest.raises(errors.NotFound):
            log.tree.check(Draft(type_, "projects/d/x", payload))


def test_an_explicit_inode_may_replace_an_unlinked_node_kept_for_the_kernel():
    log = Log()
    pinned: set[int] = set()
    log.tree.is_pinned = lambda ino: ino in pinned
    reserved = events.inode_range(log.do(events.INODES, count=events.INO_RANGE) - events.INO_BASE)
    log.do(events.MKNOD, parent=PROJECTS_INO, name=b"a", mode=FILE, ino=reserved[0])
    pinned.add(reserved[0])
    log.do(events.UNLINK, parent=PROJECTS_INO, name=b"a")
    # Another node (or a replay) no longer has the inode, so it accepts it again: so must this one.
    log.do(events.MKNOD, parent=PROJECTS_INO, name=b"b", mode=FILE, ino=reserved[0])
    assert log.tree.child(PROJECTS_INO, b"b").nlink == 1


def test_an_append_applies_only_onto_the_content_it_was_made_on():
    """A WRITE with a base is skipped, on every node alike, once the file's content is
    another: its writer then appends again onto that (files/commits.py)."""
    from lighthousefs.domain.chunks import content_digest
    log = Log()
    f = log.mk(log.mk(PROJECTS_INO, b"p", DIR), b"log")
    empty = content_digest(0, b"")
    log.do(events.WRITE, ino=f, size=3, chunks=[b"a" * 20], base=empty)
    late = Event(99, 2000, "test", events.WRITE, "projects/p/log", {"ino": f, "size": 3, "chunks": [b"b" * 20],
                                                                     "base": empty})
    assert log.tree.apply(late) is None
    assert log.tree.nodes[f].chunks == b"a" * 20
    log.events.append(late)
    replayed = Tree()
    for event in log.events:
        replayed.apply(event)
    assert state(replayed) == state(log.tree)
