"""The virtual parts of the namespace (events, .lighthouse, .history) behind the one View
interface (views/base.py), driven through the Operations in-process."""
from __future__ import annotations

import errno
import os
import stat

import pyfuse3
import pytest

from lighthousefs.domain.layout import PROJECTS_INO, ROOT_INO
from lighthousefs.views.events_file import EVENTS_INO
from tests.harness.inprocess import CTX, run_operations


async def listing(ops, ino):
    names = []
    fh = await ops.opendir(ino, CTX)
    real = pyfuse3.readdir_reply
    pyfuse3.readdir_reply = lambda token, name, attr, next_id: names.append((name, attr.st_ino)) or True
    try:
        await ops.readdir(fh, 0, None)
    finally:
        pyfuse3.readdir_reply = real
        await ops.releasedir(fh)
    return names


async def read_all(ops, ino):
    info = await ops.open(ino, os.O_RDONLY, CTX)
    try:
        return await ops.read(info.fh, 0, 1 << 20)
    finally:
        await ops.release(info.fh)


async def refused(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await call
    return raised.value.errno


def test_each_view_is_reached_by_its_door_and_listed_where_it_belongs(tmp_path):
    async def body(ops):
        project = await ops.mkdir(PROJECTS_INO, b"p", 0o755, CTX)
        info, attr = await ops.create(project.st_ino, b"a.md", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        await ops.write(info.fh, 0, b"one")
        await ops.flush(info.fh)   # still open: .lighthouse/stats counts it
        root = dict(await listing(ops, ROOT_INO))
        assert root[b"events"] == EVENTS_INO and b".lighthouse" in root
        assert b".history" not in dict(await listing(ops, project.st_ino))   # reachable, not listed
        control = await ops.lookup(ROOT_INO, b".lighthouse")
        assert [name for name, _ in await listing(ops, control.st_ino)] == [b"stats", b"health", b"version"]
        stats = await ops.lookup(control.st_ino, b"stats")
        assert b"lighthousefs_fs_open_files 1\n" in await read_all(ops, stats.st_ino)
        await ops.release(info.fh)
        events = await ops.lookup(ROOT_INO, b"events")
        assert events.st_ino == EVENTS_INO and stat.S_ISREG(events.st_mode)
        assert b'"type":"mknod","path":"projects/p/a.md"' in await read_all(ops, EVENTS_INO)
        history = await ops.lookup(project.st_ino, b".history")
        versions = await listing(ops, history.st_ino)
        assert versions   # the project's events, by number
        past = await ops.lookup(versions[-1][1], b"a.md")
        assert await read_all(ops, past.st_ino) == b"one"
        assert (await ops.getattr(past.st_ino)).st_mode & 0o222 == 0

    run_operations(tmp_path, body)


def test_a_change_to_a_view_or_its_door_gets_the_views_refusal(tmp_path):
    async def body(ops):
        project = await ops.mkdir(PROJECTS_INO, b"p", 0o755, CTX)
        info, attr = await ops.create(project.st_ino, b"a.md", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        await ops.release(info.fh)
        control = await ops.lookup(ROOT_INO, b".lighthouse")
        history = await ops.lookup(project.st_ino, b".history")
        [(_, version)] = (await listing(ops, history.st_ino))[-1:]
        past = await ops.lookup(version, b"a.md")
        assert await refused(ops.unlink(ROOT_INO, b"events", CTX)) == errno.EPERM
        assert await refused(ops.rename(ROOT_INO, b".lighthouse", PROJECTS_INO, b"x", 0, CTX)) == errno.EPERM
        assert await refused(ops.rmdir(project.st_ino, b".history", CTX)) == errno.EROFS
        assert await refused(ops.rename(project.st_ino, b"a.md", project.st_ino, b".history", 0, CTX)) \
            == errno.EROFS
        assert await refused(ops.open(EVENTS_INO, os.O_WRONLY, CTX)) == errno.EACCES
        assert await refused(ops.open(past.st_ino, os.O_RDWR, CTX)) == errno.EROFS
        assert await refused(ops.mkdir(control.st_ino, b"d", 0o755, CTX)) == errno.EPERM
        assert await refused(ops.setxattr(past.st_ino, b"user.x", b"1", CTX)) == errno.EROFS
        assert await refused(ops.link(attr.st_ino, version, b"b.md", CTX)) == errno.EROFS
        await ops.forget([(past.st_ino, 1), (version, 1)])   # numbered inodes go with the kernel's references
        assert await refused(ops.getattr(past.st_ino)) == errno.ENOENT

    run_operations(tmp_path, body)
