"""A file whose name exists but whose content is gone from the store: EIO, one ERROR.

The chunk is deleted from the SQLite store behind the daemons' backs, and a fresh mount
(no chunk in its cache) reads the file.
"""
from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from lighthousefs import content

pytestmark = pytest.mark.mount


def test_a_missing_chunk_reads_as_eio_logged_once_and_the_store_stays_trusted(mounter, store_url):
    writer = mounter("a")
    project = writer / "projects" / "p"
    project.mkdir()
    lost_data = b"content that the store will lose\n" * 10
    (project / "lost").write_bytes(lost_data)
    (project / "kept").write_bytes(b"content that stays\n")
    digest = content.chunk_hash(lost_data)
    store_path = store_url[len("sqlite://"):]
    with sqlite3.connect(store_path) as db:
        assert db.execute("DELETE FROM chunks WHERE hash=?", (digest,)).rowcount == 1
    db.close()

    reader = mounter("b")   # a fresh daemon: nothing cached
    lost = reader / "projects" / "p" / "lost"
    assert os.stat(lost).st_size == len(lost_data)   # the name is there
    for _ in range(5):   # more than the store breaker's failure threshold
        with open(lost, "rb") as f, pytest.raises(OSError) as err:
            f.read()
        assert err.value.errno == errno.EIO, err.value
    # The store answered each time: its circuit stays closed and it still serves chunks.
    assert (reader / "projects" / "p" / "kept").read_bytes() == b"content that stays\n"
    stats = (reader / ".lighthouse" / "stats").read_text()
    assert 'lighthousefs_breaker_state{breaker="store"} 0.0' in stats
    assert 'lighthousefs_breaker_transitions_total{breaker="store",state="open"}' not in stats

    log = reader.log.read_text()
    logged = [line for line in log.splitlines() if " ERROR " in line]
    assert len(logged) == 1, log
    assert digest.hex() in logged[0] and store_path in logged[0], logged[0]
    assert " ERROR " not in writer.log.read_text()
