"""The bookkeeping of files created and not yet logged (lighthousefs/newfiles.py)."""
from __future__ import annotations

import errno
import stat

import pytest

from lighthousefs import errors
from lighthousefs.domain import events
from lighthousefs.files import newfiles
from lighthousefs.files.newfiles import NewFiles

FILE = stat.S_IFREG | 0o644


def test_inodes_are_taken_in_order_until_the_range_is_used_up():
    new = NewFiles()
    assert new.used_up and new.take_ino() is None
    new.add_range(range(10, 13))
    assert [new.take_ino() for _ in range(4)] == [10, 11, 12, None]
    assert new.used_up
    new.add_range(events.inode_range(7))
    assert new.take_ino() == events.inode_range(7).start


def test_files_are_found_by_inode_name_and_directory_until_removed():
    new = NewFiles()
    node = new.add(50, 2, b"a", FILE, 1, 1)
    new.add(51, 2, b"b", FILE, 1, 1)
    new.add(52, 3, b"a", FILE, 1, 1)
    assert node.ino == 50 and node.nlink == 1 and 50 in new and len(new) == 3
    assert new.find(2, b"a").node is node and new.find(2, b"c") is None
    assert sorted(new.names_in(2)) == [(b"a", 50), (b"b", 51)] and new.names_in(4) == []
    assert new.remove(50).node is node
    assert 50 not in new and new.find(2, b"a") is None and new.node(50) is None
    assert new.names_in(2) == [(b"b", 51)]
    new.remove(51)
    assert new.names_in(2) == [] and [f.node.ino for f in new.in_dir(3)] == [52]


def test_a_dropped_file_is_answered_estale_and_the_last_ones_are_remembered(monkeypatch):
    monkeypatch.setattr(newfiles, "DROPPED_KEPT", 2)
    new = NewFiles()
    for ino in (60, 61, 62, 63):
        new.add(ino, 2, b"f%d" % ino, FILE, 1, 1)
    new.remove(63)   # adopted (logged): not dropped
    new.check_not_dropped(63)
    for ino in (60, 61, 62):
        new.drop(ino)
    assert 60 not in new and new.find(2, b"f60") is None
    new.check_not_dropped(60)   # the oldest is forgotten
    for ino in (61, 62):
        with pytest.raises(errors.LighthouseError) as err:
            new.check_not_dropped(ino)
        assert err.value.errno == errno.ESTALE
