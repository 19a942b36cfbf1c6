"""POSIX behaviour a program may rely on: device nodes, and the times a change moves."""
from __future__ import annotations

import errno
import os
import sqlite3
import stat

import pytest

from mounting import lighthouse
from redis_server import RedisServer

pytestmark = pytest.mark.mount


@pytest.fixture(params=["sqlite", "redis"])
def any_store(request, store_url):
    if request.param == "sqlite":
        yield store_url
    else:
        with RedisServer() as server:
            yield server.url


def mount_options(path) -> set[str]:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(path):
                return set(fields[3].split(","))
    raise AssertionError(f"{path} is not mounted")


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
    lighthouse("umount", str(m.path))
    if any_store.startswith("sqlite://"):   # and from the log alone
        with sqlite3.connect(any_store[len("sqlite://"):]) as db:
            db.execute("DELETE FROM snapshots")
        db.close()
    again = mounter("a", store=any_store)
    check_devices(again / "projects" / "p")
    assert "nodev" in mount_options(again.path)
    history = again / "projects" / "p" / ".history"
    check_devices(history / max(os.listdir(history), key=int), 0o440)   # read-only there
