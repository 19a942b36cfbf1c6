"""A file created without O_EXCL enters the log at its first close, as one event with
its content (lighthousefs/newfiles.py); until then it lives in its daemon only."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess

import pytest

from tests.harness.mounts import eventually, lighthouse

pytestmark = pytest.mark.mount

CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def logged(m) -> list[dict]:
    return [json.loads(line) for line in (m / "events").read_text().splitlines()]


def logged_paths(m, type_: str) -> list[str]:
    return [e["path"] for e in logged(m) if e["type"] == type_]


def close_quietly(fd: int | None) -> None:
    """In a finally: a descriptor left open would keep the mount busy at teardown.
    (None: closed already; its number may belong to another file by now.)"""
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass


def two_nodes_with_a_project(mounter):
    """Mounts a and b of one store, both seeing projects/p."""
    a, b = mounter("a"), mounter("b")
    (a / "projects" / "p").mkdir()
    eventually(lambda: (b / "projects" / "p").is_dir())
    return a, b


def a_new_file_whose_name_b_takes(a, b) -> int:
    """a holds projects/p/x open, new and written; b creates x too, and is logged first."""
    fd = os.open(a / "projects" / "p" / "x", CREATE)
    os.write(fd, b"from a")
    (b / "projects" / "p" / "x").write_text("from b")
    return fd


def test_create_write_close_is_one_event_with_the_inode_the_kernel_was_given(mounter):
    a, b = mounter("a"), mounter("b")
    project = a / "projects" / "p"
    project.mkdir()
    fd = os.open(project / "doc", CREATE, 0o640)
    try:
        os.write(fd, b"hello")
        inode = os.fstat(fd).st_ino
        # Here it is a file like any other...
        assert os.listdir(project) == ["doc"]
        assert os.stat(project / "doc").st_ino == inode
        assert (project / "doc").read_bytes() == b"hello"
        # ...and nowhere else yet.
        assert "projects/p/doc" not in logged_paths(a, "mknod")
        assert "lighthousefs_new_files_unlogged 1.0" in (a / ".lighthouse" / "stats").read_text()
        eventually(lambda: (b / "projects" / "p").is_dir())
        assert os.listdir(b / "projects" / "p") == []
    finally:
        os.close(fd)
    assert "lighthousefs_new_files_unlogged 0.0" in (a / ".lighthouse" / "stats").read_text()
    [event] = [e for e in logged(a) if e["path"] == "projects/p/doc"]
    assert event["type"] == "mknod" and event["data"]["ino"] == inode and event["data"]["size"] == 5
    there = eventually(lambda: os.stat(b / "projects" / "p" / "doc"))
    assert there.st_ino == inode and there.st_mode & 0o777 == 0o640
    assert (b / "projects" / "p" / "doc").read_bytes() == b"hello"


def test_inodes_come_from_one_reserved_range_per_daemon(mounter):
    a, b = two_nodes_with_a_project(mounter)
    inodes = {}
    for m in (a, b):
        for i in range(3):
            path = m / "projects" / "p" / f"{m.path.name}{i}"
            path.write_text("x")
            inodes[path.name] = path.stat().st_ino
    assert len(set(inodes.values())) == 6
    # One range each, reserved by the first create (b's reaches a through the store).
    def all_seven_files_logged():
        events = logged(a)
        return events if sum(e["type"] == "mknod" for e in events) == 7 else None
    log = eventually(all_seven_files_logged)
    reservations = [e["seq"] for e in log if e["type"] == "inodes"]
    assert len(reservations) == 2
    first = {(1 << 40) + seq * (1 << 16) for seq in reservations}
    assert {inodes["a0"], inodes["b0"]} == first
    assert inodes["a2"] == inodes["a0"] + 2


def test_an_exclusive_create_is_logged_at_once(mounter):
    a, b = mounter("a"), mounter("b")
    (a / "projects" / "p").mkdir()
    fd = os.open(a / "projects" / "p" / "lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert "projects/p/lock" in logged_paths(a, "mknod")
        eventually(lambda: (b / "projects" / "p" / "lock").exists())
        with pytest.raises(FileExistsError):
            os.open(b / "projects" / "p" / "lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    finally:
        os.close(fd)


def test_a_name_held_by_a_new_file_is_taken(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    (project / "other").write_text("other")
    fd = os.open(project / "new", CREATE)
    try:
        os.write(fd, b"new")
        for make in (os.mkdir, lambda p: os.symlink("x", p), lambda p: os.link(project / "other", p),
                     lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)):
            with pytest.raises(FileExistsError):
                make(project / "new")
        with pytest.raises(OSError) as err:
            os.rmdir(project)
        assert err.value.errno == errno.ENOTEMPTY
    finally:
        os.close(fd)
    assert (project / "new").read_bytes() == b"new"
    assert sorted(os.listdir(project)) == ["new", "other"]


def test_changes_to_an_open_new_file_log_it_first(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    fd = os.open(project / "draft", CREATE, 0o644)
    try:
        os.write(fd, b"one ")
        os.rename(project / "draft", project / "final")
        os.chmod(project / "final", 0o600)
        os.setxattr(project / "final", "user.topic", b"notes")
        os.link(project / "final", project / "alias")
        os.write(fd, b"two")
    finally:
        os.close(fd)
    assert (project / "final").read_bytes() == b"one two"
    assert os.stat(project / "alias").st_ino == os.stat(project / "final").st_ino
    assert os.stat(project / "final").st_mode & 0o777 == 0o600
    assert os.getxattr(project / "final", "user.topic") == b"notes"
    types = [(e["type"], e["path"]) for e in logged(mnt) if e["path"].startswith("projects/p/")]
    assert types[:5] == [("mknod", "projects/p/draft"), ("rename", "projects/p/draft"),
                         ("setattr", "projects/p/final"), ("setxattr", "projects/p/final"),
                         ("link", "projects/p/alias")]
    assert [t for t, _ in types[5:]] == ["write"]


def test_rmdir_and_rename_over_a_new_file(mnt):
    project = mnt / "projects" / "p"
    (project / "d").mkdir(parents=True)
    fd = os.open(project / "d" / "x", CREATE)
    try:
        with pytest.raises(OSError) as err:
            os.rmdir(project / "d")
        assert err.value.errno == errno.ENOTEMPTY
        (project / "y").write_text("y")
        os.rename(project / "y", project / "d" / "x")   # replaces the open new file
        os.write(fd, b"lost with its name")
    finally:
        os.close(fd)
    assert (project / "d" / "x").read_text() == "y"
    assert os.listdir(project / "d") == ["x"]


def test_a_new_file_unlinked_while_open_leaves_nothing(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    fd = os.open(project / "tmp", os.O_RDWR | os.O_CREAT)
    try:
        os.unlink(project / "tmp")
        os.write(fd, b"scratch")
        assert os.pread(fd, 100, 0) == b"scratch"
    finally:
        os.close(fd)
    assert os.listdir(project) == []
    # The unlink logged the empty file first; what was written after it was never stored.
    assert [(e["type"], e["data"].get("size")) for e in logged(mnt) if e["path"] == "projects/p/tmp"] == [
        ("mknod", 0), ("unlink", None)]


def test_touch_and_an_empty_close_make_empty_files(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    os.close(os.open(project / "empty", CREATE))
    # A close that wrote nothing commits nothing (files/writer.py, flush): the release logs the file.
    eventually(lambda: "projects/p/empty" in logged_paths(mnt, "mknod"))
    os.utime(project / "empty", ns=(10**18, 10**18))
    assert os.stat(project / "empty").st_mtime_ns == 10**18
    subprocess.run(["touch", "-d", "2001-02-03 04:05:06Z", str(project / "touched")], check=True)
    assert os.stat(project / "touched").st_mtime == 981173106
    assert os.stat(project / "touched").st_size == 0


@pytest.mark.expect_log("the new file is dropped, its content was not stored: .* exists")
def test_the_same_name_created_on_another_node_first_wins(mounter):
    a, b = two_nodes_with_a_project(mounter)
    fd = a_new_file_whose_name_b_takes(a, b)
    eventually(lambda: "projects/p/x" in logged_paths(a, "mknod"))
    with pytest.raises(FileExistsError):
        os.close(fd)       # a's file could not be logged: its close says so
    for m in (a, b):
        eventually(lambda m=m: (m / "projects" / "p" / "x").read_text() == "from b")
        assert os.listdir(m / "projects" / "p") == ["x"]
    assert "the new file is dropped" in a.log.read_text()


@pytest.mark.expect_log("a dead mount was left by a killed daemon; detaching it")
def test_a_killed_daemon_loses_only_files_never_closed(mounter):
    m = mounter("a")
    project = m / "projects" / "p"
    project.mkdir()
    (project / "closed").write_text("kept")
    fd = os.open(project / "open", CREATE)
    os.write(fd, b"never closed")
    os.kill(m.pid, signal.SIGKILL)
    with pytest.raises(OSError):
        os.close(fd)
    again = mounter("a")
    assert os.listdir(again / "projects" / "p") == ["closed"]
    assert (again / "projects" / "p" / "closed").read_text() == "kept"


def test_a_directory_replaced_by_rename_keeps_its_new_files(mnt):
    project = mnt / "projects" / "p"
    (project / "full").mkdir(parents=True)
    (project / "empty").mkdir()
    fd = os.open(project / "full" / "x", CREATE)
    try:
        with pytest.raises(OSError) as err:   # "full" holds a file, logged or not
            os.rename(project / "empty", project / "full")
        assert err.value.errno == errno.ENOTEMPTY
    finally:
        os.close(fd)
    assert os.listdir(project / "full") == ["x"]


def test_a_refused_create_reserves_nothing(mnt):
    with pytest.raises(PermissionError):   # projects/ holds only directories
        os.open(mnt / "projects" / "x", CREATE)
    assert "inodes" not in [e["type"] for e in logged(mnt)]


def test_a_close_racing_a_rename_loses_nothing(mounter):
    """The close that logs a new file and a rename that must log it first meet on the
    file's lock: whichever comes second finds it logged. Nothing is lost or doubled, and
    a fresh daemon replays the same tree."""
    import threading
    m = mounter("a")
    project = m / "projects" / "p"
    project.mkdir()
    barrier = threading.Barrier(2, timeout=30)
    problems = []

    def close_it(fd):
        barrier.wait()
        try:
            os.close(fd)
        except OSError as exc:   # a close that fails is a lost file: reported below
            problems.append(exc)

    for i in range(150):
        fd = os.open(project / f"f{i}", CREATE)
        os.write(fd, f"content {i}".encode())
        closer = threading.Thread(target=close_it, args=(fd,))
        closer.start()
        barrier.wait()
        try:
            os.rename(project / f"f{i}", project / f"g{i}")
        except OSError as exc:
            problems.append(exc)
        closer.join()
    assert not problems
    expected = {f"g{i}": f"content {i}" for i in range(150)}
    assert {p.name: p.read_text() for p in project.iterdir()} == expected
    lighthouse("umount", str(m.path))
    again = mounter("a")
    assert {p.name: p.read_text() for p in (again / "projects" / "p").iterdir()} == expected
    types = [e["type"] for e in logged(again)]
    assert types.count("mknod") == 151 and types.count("rename") == 150 and "write" not in types


@pytest.mark.expect_log("the new file is dropped, its content was not stored: directory \\d+ has been removed")
def test_a_directory_removed_elsewhere_fails_the_close_everywhere_alike(mounter):
    a, b = mounter("a"), mounter("b")
    (a / "projects" / "p" / "d").mkdir(parents=True)
    eventually(lambda: (b / "projects" / "p" / "d").is_dir())
    held = os.open(a / "projects" / "p" / "d", os.O_RDONLY)   # a's kernel keeps the directory
    try:
        fd = os.open(a / "projects" / "p" / "d" / "f", CREATE)
        os.write(fd, b"written into a directory that goes away")
        os.rmdir(b / "projects" / "p" / "d")                 # b cannot see a's new file
        eventually(lambda: not (a / "projects" / "p" / "d").exists())
        with pytest.raises(FileNotFoundError):
            os.close(fd)
    finally:
        os.close(held)
    assert "projects/p/d/f" not in logged_paths(a, "mknod") and "?" not in str(logged_paths(a, "mknod"))
    c = mounter("c")
    assert os.listdir(c / "projects" / "p") == []


@pytest.mark.expect_log("the new file is dropped, its content was not stored: .* exists")
def test_other_handles_of_a_dropped_new_file_fail_instead_of_writing_into_nothing(mounter):
    a, b = two_nodes_with_a_project(mounter)
    fd1 = os.open(a / "projects" / "p" / "x", CREATE)
    fd2 = os.open(a / "projects" / "p" / "x", os.O_WRONLY)
    try:
        os.write(fd1, b"from a")   # so that its close logs it
        (b / "projects" / "p" / "x").write_text("from b")
        eventually(lambda: "projects/p/x" in logged_paths(a, "mknod"))
        with pytest.raises(FileExistsError):
            fd, fd1 = fd1, None
            os.close(fd)
        with pytest.raises(OSError) as err:
            os.write(fd2, b"would be lost")
        assert err.value.errno == errno.ESTALE
    finally:
        close_quietly(fd1)
        close_quietly(fd2)
    assert (a / "projects" / "p" / "x").read_text() == "from b"


def test_a_change_by_name_after_another_node_took_it_is_about_that_node_file(mounter):
    a, b = two_nodes_with_a_project(mounter)
    fd = a_new_file_whose_name_b_takes(a, b)
    try:
        eventually(lambda: (a / "projects" / "p" / "x").read_text() == "from b")
        os.rename(a / "projects" / "p" / "x", a / "projects" / "p" / "y")   # b's file, not a's
        fd, closing = None, fd
        os.close(closing)    # the name is free again: a's file is logged after all
    finally:
        close_quietly(fd)
    for m in (a, b):
        eventually(lambda m=m: sorted(os.listdir(m / "projects" / "p")) == ["x", "y"])
        assert (m / "projects" / "p" / "y").read_text() == "from b"
        eventually(lambda m=m: (m / "projects" / "p" / "x").read_text() == "from a")
