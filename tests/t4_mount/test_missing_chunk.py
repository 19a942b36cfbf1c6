"""A file whose name exists but whose content is gone from the store: EIO, one ERROR.

The chunk is deleted from the SQLite store behind the daemons' backs, and a fresh mount
(no chunk in its cache) reads the file.
"""
from __future__ import annotations

import os
import sqlite3

import pytest
from tests.harness.scenarios import assert_eio_and_the_store_still_trusted

from lighthousefs.domain import chunks as content

pytestmark = pytest.mark.mount


@pytest.mark.expect_log("DATA LOST: .* has no chunk")
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
    assert_eio_and_the_store_still_trusted(reader, lost)
    assert (reader / "projects" / "p" / "kept").read_bytes() == b"content that stays\n"   # still served

    log = reader.log.read_text()
    logged = [line for line in log.splitlines() if " ERROR " in line]
    assert len(logged) == 1, log
    assert digest.hex() in logged[0] and store_path in logged[0], logged[0]
    assert " ERROR " not in writer.log.read_text()
