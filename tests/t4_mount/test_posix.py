"""POSIX behaviour a program may rely on: device nodes, and the times a change moves."""
from __future__ import annotations

import errno
import os
import sqlite3
import stat
import time

import pytest

from lighthousefs import mounttable
from tests.harness.mounts import lighthouse
from tests.harness.redis_servers import RedisServer

pytestmark = pytest.mark.mount


@pytest.fixture(params=["sqlite", "redis"])
def any_store(request, store_url):
    if request.param == "sqlite":
        yield store_url
    else:
        with RedisServer() as server:
            yield server.url


def mount_options(path) -> set[str]:
    found = [e.options for e in mounttable.read() if e.point == str(path)]
    assert found, f"{path} is not mounted"
    return set(found[-1])   # the topmost mount there


def remount_from_the_log(mounter, m, store: str):
    """Unmount and mount again, with the snapshots gone where that is easy (SQLite),
    so the tree is replayed from the events."""
    lighthouse("umount", str(m.path))
    if store.startswith("sqlite://"):
        db = sqlite3.connect(store[len("sqlite://"):])
        with db:
            db.execute("DELETE FROM snapshots")
        db.close()
    return mounter(m.path.name, store=store)


DEVICES = {"null": (stat.S_IFCHR, os.makedev(1, 3)), "loop": (stat.S_IFBLK, os.makedev(7, 0)),
           "zero": (stat.S_IFCHR, 0)}


def check_devices(directory, mode: int = 0o640) -> None:
    for name, (kind, rdev) in DEVICES.items():
        st = os.lstat(directory / name)
        assert (stat.S_IFMT(st.st_mode), st.st_rdev, stat.S_IMODE(st.st_mode)) == (kind, rdev, mode), name
        # nodev: the kernel refuses to open a device node here, so nothing reaches a device.
        for flags in (os.O_RDONLY, os.O_WRONLY):
            with pytest.raises(OSError) as err:
                os.close(os.open(directory / name, flags))
            assert err.value.errno == errno.EACCES, name


def test_device_nodes_are_stored_and_never_opened(mounter, any_store):
    m = mounter("a", store=any_store)
    assert "nodev" in mount_options(m.path)
    project = m / "projects" / "p"
    project.mkdir()
    for name, (kind, rdev) in DEVICES.items():
        os.mknod(project / name, kind | 0o640, rdev)
    check_devices(project)
    assert sorted(os.listdir(project)) == sorted(DEVICES)
    lighthouse("umount", str(m.path))
    check_devices(mounter("a", store=any_store) / "projects" / "p")   # from the snapshot
    again = remount_from_the_log(mounter, m, any_store)
    check_devices(again / "projects" / "p")
    assert "nodev" in mount_options(again.path)
    history = again / "projects" / "p" / ".history"
    check_devices(history / max(os.listdir(history), key=int), 0o440)   # read-only there


# Changes through an open descriptor, as programs make them: (file, content before,
# open flags, what is done with the descriptor and the path).
HANDLE_STEPS = [
    ("o_trunc", b"hello", os.O_WRONLY | os.O_TRUNC, lambda fd, path: None),
    ("o_trunc_empty", b"", os.O_WRONLY | os.O_TRUNC, lambda fd, path: None),
    ("ftruncate", b"hello world", os.O_WRONLY, lambda fd, path: os.ftruncate(fd, 3)),   # truncate -s 3
    ("ftruncate_same_size", b"hello", os.O_WRONLY, lambda fd, path: os.ftruncate(fd, 5)),
    ("write", b"hello", os.O_WRONLY, lambda fd, path: os.write(fd, b"J")),
    ("write_then_futimens", b"hello", os.O_WRONLY,   # cp -p, rsync: times set before close
     lambda fd, path: (os.write(fd, b"J"), os.utime(fd, ns=(10**18, 10**18)))),
    ("truncate_by_path_while_open", b"hello", os.O_RDONLY, lambda fd, path: os.truncate(path, 2)),
    ("open_for_writing_only", b"hello", os.O_WRONLY, lambda fd, path: None),
    ("read", b"hello", os.O_RDONLY, lambda fd, path: os.read(fd, 5)),
]


def times(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_ctime_ns


def run_handle_steps(root) -> tuple[dict, dict]:
    """For each step: which of mtime and ctime moved, as stat shows them while the file
    is open and after close, and whether close changed them; and the times after close."""
    moved, after_close = {}, {}
    for name, content, flags, action in HANDLE_STEPS:
        path = root / name
        path.write_bytes(content)
        before = times(path)
        time.sleep(0.05)   # past the clock's granularity (ext4 uses the coarse clock)
        fd = os.open(path, flags)
        try:
            action(fd, path)
            while_open = times(path)
        finally:
            os.close(fd)
        after_close[name] = times(path)
        moved[name] = {"while open": (while_open[0] != before[0], while_open[1] != before[1]),
                       "after close": (after_close[name][0] != before[0], after_close[name][1] != before[1]),
                       "close changed them": after_close[name] != while_open}
    return moved, after_close


def test_changes_through_a_handle_move_the_times_as_on_ext4(mounter, any_store, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    expected, _ = run_handle_steps(local)
    m = mounter("a", store=any_store)
    project = m / "projects" / "p"
    project.mkdir()
    seen, shown = run_handle_steps(project)
    assert {name: seen[name] for name in seen if seen[name] != expected[name]} == \
        {name: expected[name] for name in seen if seen[name] != expected[name]}
    # The commits at close stored the times stat showed: a snapshot and a replay keep them.
    lighthouse("umount", str(m.path))
    again = mounter("a", store=any_store)
    assert {name: times(again / "projects" / "p" / name) for name in shown} == shown
    again = remount_from_the_log(mounter, again, any_store)
    assert {name: times(again / "projects" / "p" / name) for name in shown} == shown
