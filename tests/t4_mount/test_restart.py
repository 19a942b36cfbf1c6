"""Restart: what a start had to replay is snapshotted, so the next start replays nothing;
and a tree loaded from a snapshot plus the events after it is the tree the whole log
builds."""
from __future__ import annotations

import os
import re
import uuid

import pytest
from tests.harness.mounts import eventually, lighthouse

from lighthousefs.api import Client
from lighthousefs.domain import snapshot
from lighthousefs.domain.tree import Tree
from lighthousefs.engine import housekeeping
from lighthousefs.engine.projection import load_tree, replay
from lighthousefs.store import open_store

pytestmark = pytest.mark.mount


@pytest.fixture(params=["sqlite", "redis"])
def url(request, store_url) -> str:
    if request.param == "sqlite":
        return store_url
    server = request.getfixturevalue("own_server")
    return f"{server.url}{'&' if '?' in server.url else '?'}namespace=t{uuid.uuid4().hex[:10]}"


def stat_value(mount, name: str) -> float | None:
    stats = (mount / ".lighthouse" / "stats").read_text()
    found = re.search(rf"^{name} (\S+)$", stats, re.M)
    return float(found.group(1)) if found else None


def stored(url: str) -> tuple[int, int | None]:
    """(last seq, seq of the newest snapshot or None), read from the store directly."""
    store = open_store(url)
    try:
        snap = store.latest_snapshot()
        return store.last_seq(), snap[0] if snap else None
    finally:
        store.close()


def state(tree: Tree) -> dict:
    return {ino: node.dump() for ino, node in tree.nodes.items()}


def test_unmount_snapshots_what_the_start_replayed(mounter, url):
    with Client(url, actor="producer") as client:
        for i in range(30):
            client.write_file(f"projects/api/f{i}", b"%d\n" % i)
    last, snap = stored(url)
    assert snap is None
    m = mounter("a", store=url)
    replayed = stat_value(m, "lighthousefs_journal_start_replayed_events")
    assert (m / "projects" / "api" / "f29").read_bytes() == b"29\n"
    lighthouse("umount", str(m.path))
    assert stored(url) == (last, last)
    assert replayed == last
    again = mounter("a", store=url)
    assert stat_value(again, "lighthousefs_journal_start_replayed_events") == 0
    assert stat_value(again, "lighthousefs_journal_snapshot_seq") == last
    assert [(again / "projects" / "api" / f"f{i}").read_bytes() for i in range(30)] == \
        [b"%d\n" % i for i in range(30)]


def test_a_start_that_replayed_many_events_snapshots_in_the_background(mounter, url):
    with Client(url, actor="producer") as client:
        client.write_file("projects/api/first", b"1\n")
        for start in range(0, housekeeping.SNAPSHOT_EVERY, 2000):
            client.append_many([("note", "projects/api", {"i": i}) for i in range(start, start + 2000)])
        client.write_file("projects/api/last", b"2\n")
    last, _ = stored(url)
    m = mounter("a", store=url)
    # Without an unmount and without any new event: the start itself stores it (the
    # gauge moves once the store took it).
    eventually(lambda: stat_value(m, "lighthousefs_journal_snapshot_seq") == last, timeout=60)
    assert (m / "projects" / "api" / "last").read_bytes() == b"2\n"
    lighthouse("umount", str(m.path))
    assert stored(url) == (last, last)


def test_snapshot_plus_replay_is_the_full_replay(mounter, url):
    """The daemon's own snapshots (taken at start and at unmount, from a worker thread)
    load into the tree that replaying the whole log builds."""
    m = mounter("a", store=url)
    p = m / "projects" / "p"
    (p / "d" / "e").mkdir(parents=True)
    for i in range(40):
        (p / "d" / f"f{i}").write_bytes(os.urandom(i * 50))
    os.rename(p / "d" / "f1", p / "d" / "e" / "moved")
    os.unlink(p / "d" / "f2")
    os.link(p / "d" / "f3", p / "hard")
    os.symlink("d/f4", p / "link")
    os.chmod(p / "d" / "f5", 0o600)
    os.setxattr(p / "d" / "f6", "user.k", b"v")
    lighthouse("umount", str(m.path))
    with Client(url, actor="producer") as client:   # events after the unmount snapshot
        client.write_file("projects/p/d/f7", b"replaced")
        client.write_file("projects/p/new", b"new")
    again = mounter("a", store=url)
    assert (again / "projects" / "p" / "new").read_bytes() == b"new"
    lighthouse("umount", str(again.path))
    store = open_store(url)
    try:
        full = Tree()
        replay(store, full, float("inf"))
        assert store.latest_snapshot()[0] == full.applied_seq
        loaded = load_tree(store)
        assert 0 < loaded.snapshot_seq == loaded.applied_seq == full.applied_seq
        assert state(loaded) == state(full)
        # An earlier snapshot plus the events since it, too.
        middle = load_tree(store, full.applied_seq - 2)
        store.put_snapshot(middle.applied_seq, snapshot.dump(middle))
        resumed = snapshot.load(store.latest_snapshot(middle.applied_seq)[1])
        replay(store, resumed, float("inf"))
        assert resumed.snapshot_seq == full.applied_seq - 2
        assert state(resumed) == state(full)
    finally:
        store.close()
