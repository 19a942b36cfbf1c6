"""`.history` keeps bounded state: past trees within a count and a total of inodes, and
inode numbers only while the kernel holds them. A walk of many versions of a large
namespace must not grow the daemon for good (it did: 118 -> 338 MB, never released).

SQLite only: what is kept does not depend on the store."""
from __future__ import annotations

import os
import re
import stat

import pytest
from tests.harness.mounts import eventually

from lighthousefs.api import Client
from lighthousefs.domain import chunks as content
from lighthousefs.domain import events
from lighthousefs.domain.events import Draft
from lighthousefs.views import history

pytestmark = pytest.mark.mount

VERSIONS = 12


def gauge(mount, name: str) -> float | None:
    stats = (mount / ".lighthouse" / "stats").read_text()
    found = re.search(rf"^{name} (\S+)$", stats, re.M)
    return float(found.group(1)) if found else None


def populate(url: str, files: int) -> int:
    """`files` small files under projects/big, appended straight to the store; the last seq."""
    with Client(url, actor="producer") as client:
        top = client.mkdirs("projects/big")
        for d in range(0, files, 1000):
            [made] = client.store.append([Draft(events.MKNOD, f"projects/big/d{d}", {
                "parent": top.ino, "name": b"d%d" % d, "mode": stat.S_IFDIR | 0o755})], {}, False)
            drafts, chunks = [], {}
            for i in range(d, min(files, d + 1000)):
                hashes, new = content.split(b"%d\n" % i)
                chunks.update(new)
                drafts.append(Draft(events.MKNOD, f"projects/big/d{d}/f{i}", {
                    "parent": events.ino_for_seq(made.seq), "name": b"f%d" % i, "mode": stat.S_IFREG | 0o644,
                    "size": len(b"%d\n" % i), "chunks": hashes}))
            client.store.append(drafts, chunks, False)
        return client.store.last_seq()


def walk(root) -> dict:
    """Every file under root with its content."""
    out = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_walking_many_versions_stays_within_the_bounds(mounter, store_url):
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        pytest.skip("needs root to make the kernel drop its caches")
    # Past trees of this size: the inode budget, not the count, limits what is kept.
    last = populate(store_url, history.INODES_KEPT * 2 // history.TREES_KEPT)
    m = mounter()
    eventually(lambda: gauge(m, "lighthousefs_journal_snapshot_seq") >= last, timeout=120)   # quick rebuilds
    p = m / "projects" / "p"
    (p / "sub").mkdir(parents=True)
    for i in range(3):
        (p / "sub" / f"s{i}").write_bytes(b"sub %d" % i)
    for i in range(VERSIONS):
        (p / "doc").write_bytes(b"v%d" % i)
    versions = sorted(os.listdir(p / ".history"), key=int)
    assert len(versions) >= VERSIONS
    seen = {v: walk(p / ".history" / v) for v in versions}
    assert [files["doc"] for files in seen.values() if "doc" in files][-VERSIONS:] == \
        [b"v%d" % i for i in range(VERSIONS)]
    assert seen[versions[-1]]["sub/s2"] == b"sub 2"
    assert gauge(m, "lighthousefs_history_cached_trees") <= history.TREES_KEPT
    assert gauge(m, "lighthousefs_history_cached_tree_inodes") <= history.INODES_KEPT
    assert gauge(m, "lighthousefs_history_inodes") > 3 * len(versions)   # held by the kernel now

    def forgotten() -> bool:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")   # the kernel forgets every inode it does not use
        return gauge(m, "lighthousefs_history_inodes") <= 2
    eventually(forgotten, interval=0.2)
    # Trees evicted and inode numbers dropped: the same versions read the same again.
    assert {v: walk(p / ".history" / v) for v in versions} == seen
