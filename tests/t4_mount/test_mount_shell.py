"""A real mount driven by the shell tools people and agents use."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from tests.harness.mounts import eventually, next_line

pytestmark = pytest.mark.mount


def sh(command: str, cwd) -> str:
    result = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command!r} failed: {result.stderr}"
    return result.stdout


def test_layout(mnt):
    assert sorted(os.listdir(mnt.path)) == [".lighthouse", "agents", "events", "memories", "projects"]
    assert os.listdir(mnt / "memories") == ["shared"]
    assert json.loads((mnt / ".lighthouse" / "health").read_text())["status"] == "ok"
    assert (mnt / ".lighthouse" / "version").read_text().startswith("lighthousefs ")
    assert "applied_seq" in (mnt / ".lighthouse" / "stats").read_text()


def test_everyday_shell_tools(mnt):
    p = mnt / "projects"
    sh("mkdir -p demo/src/deep && echo hello > demo/src/a.txt && echo world >> demo/src/a.txt", p)
    assert sh("cat demo/src/a.txt", p) == "hello\nworld\n"
    assert "a.txt" in sh("ls -la demo/src", p)
    sh("cp -r demo copy && mv copy/src/a.txt copy/src/b.txt", p)
    assert sorted(sh("grep -r world .", p).splitlines()) == ["./copy/src/b.txt:world", "./demo/src/a.txt:world"]
    assert sorted(sh("find copy", p).split()) == ["copy", "copy/src", "copy/src/b.txt", "copy/src/deep"]
    sh("sed -i 's/hello/bye/' demo/src/a.txt", p)
    assert (p / "demo/src/a.txt").read_text() == "bye\nworld\n"
    sh("rm -r copy", p)
    assert os.listdir(p) == ["demo"]
    sh("ln -s src/a.txt demo/link && ln demo/src/a.txt demo/hard", p)
    assert os.readlink(p / "demo/link") == "src/a.txt"
    assert (p / "demo/link").read_text() == "bye\nworld\n"
    assert os.stat(p / "demo/hard").st_ino == os.stat(p / "demo/src/a.txt").st_ino
    assert os.stat(p / "demo/hard").st_nlink == 2
    sh("chmod 600 demo/hard && touch -d '2020-01-02 03:04:05' demo/hard", p)
    st = os.stat(p / "demo/src/a.txt")
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_mtime == pytest.approx(1577934245, abs=86400)


def test_git_in_a_project(mnt):
    p = mnt / "projects" / "repo"
    p.mkdir()
    sh("git init -q . && git config user.email a@b && git config user.name agent", p)
    for i in range(30):
        (p / f"file{i}.txt").write_text(f"line {i}\n")
    sh("git add -A && git commit -qm first", p)
    (p / "file3.txt").write_text("changed\n")
    sh("git commit -qam second", p)
    assert sh("git log --oneline", p).count("\n") == 2
    assert sh("git status --porcelain", p) == ""
    assert sh("git fsck --no-progress --no-dangling 2>&1", p) == ""


def test_tarfile_extracts_a_tree(mnt):
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w") as tar:
        for i in range(20):
            data = (f"member {i}\n" * (i * 500)).encode()
            info = tarfile.TarInfo(f"pkg/dir{i % 3}/m{i}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob.seek(0)
    with tarfile.open(fileobj=blob) as tar:
        tar.extractall(mnt / "projects", filter="data")
    blob.seek(0)
    with tarfile.open(fileobj=blob) as tar:
        for member in tar.getmembers():
            assert (mnt / "projects" / member.name).read_bytes() == tar.extractfile(member).read()


def test_large_file_and_offsets(mnt):
    path = mnt / "projects" / "p" / "big"
    path.parent.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert path.read_bytes() == data
    with open(path, "r+b") as f:
        f.seek(1_000_000)
        f.write(b"PATCH")
        f.truncate(2_000_000)
    expected = data[:1_000_000] + b"PATCH" + data[1_000_005:2_000_000]
    assert path.read_bytes() == expected
    os.truncate(path, 10)
    assert path.read_bytes() == expected[:10]


def test_unlinked_file_stays_usable_while_open(mnt):
    (mnt / "projects" / "p").mkdir()
    path = mnt / "projects" / "p" / "tmpfile"
    with open(path, "w+b") as f:
        f.write(b"still here")
        f.flush()
        os.unlink(path)
        assert not path.exists()
        f.seek(0)
        assert f.read() == b"still here"
        f.write(b" and more")
        f.seek(0)
        assert f.read() == b"still here and more"
        assert os.fstat(f.fileno()).st_nlink == 0


def gauge(mnt, name: str) -> int:
    for line in (mnt / ".lighthouse" / "stats").read_text().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"no {name} in stats")


def test_the_kernel_forgetting_unlinked_files_frees_them(mnt):
    """Unlinked files the kernel still references stay in the tree; once it forgets them
    (dropping its caches makes it do so now) they are gone, and so are their references."""
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        pytest.skip("needs root to make the kernel drop its caches")
    (mnt / "projects" / "gone").mkdir()
    for i in range(50):
        (mnt / "projects" / "gone" / f"f{i}").write_bytes(b"x")
    assert len(os.listdir(mnt / "projects" / "gone")) == 50
    inodes = gauge(mnt, "lighthousefs_tree_inodes")
    held_by_kernel = gauge(mnt, "lighthousefs_fs_kernel_inodes")
    assert held_by_kernel >= 50

    def forgotten_down_to(count: int) -> bool:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        return gauge(mnt, "lighthousefs_tree_inodes") == count

    held = open(mnt / "projects" / "gone" / "f0", "rb")
    try:
        for i in range(50):
            os.unlink(mnt / "projects" / "gone" / f"f{i}")

        eventually(lambda: forgotten_down_to(inodes - 49), interval=0.2)   # f0 is still open
        assert held.read() == b"x"
    finally:
        held.close()
    eventually(lambda: forgotten_down_to(inodes - 50), interval=0.2)   # (drop_caches is host-wide)
    assert gauge(mnt, "lighthousefs_fs_kernel_inodes") <= held_by_kernel - 50


def test_xattrs_and_statfs(mnt):
    (mnt / "projects" / "p").mkdir()
    path = mnt / "projects" / "p" / "x"
    path.write_text("x")
    os.setxattr(path, "user.topic", b"memory")
    assert os.getxattr(path, "user.topic") == b"memory"
    assert os.listxattr(path) == ["user.topic"]
    os.removexattr(path, "user.topic")
    with pytest.raises(OSError) as err:
        os.getxattr(path, "user.topic")
    assert err.value.errno == errno.ENODATA
    fs = os.statvfs(mnt.path)
    assert fs.f_namemax == 255 and fs.f_bavail > 0


def test_tail_follows_events_and_cat_ends(mnt):
    events = mnt / "events"
    (mnt / "projects" / "a").mkdir()
    lines = events.read_text().splitlines()
    assert json.loads(lines[-1])["path"] == "projects/a"
    (mnt / "projects" / "a" / "first.md").write_text("x")   # its create reserves inodes first
    assert [json.loads(line)["type"] for line in events.read_text().splitlines()[-2:]] == ["inodes", "mknod"]
    tail = subprocess.Popen(["tail", "-n", "0", "-F", "-s", "0.1", str(events)], stdout=subprocess.PIPE,
                            bufsize=0)
    try:
        time.sleep(0.5)     # let tail reach the end before the change (not a timing assertion)
        (mnt / "projects" / "a" / "note.md").write_text("hi")
        record = json.loads(next_line(tail))
        # A new file and its content are one event, logged at its close.
        assert record["path"] == "projects/a/note.md" and record["type"] == "mknod"
        assert record["data"]["size"] == 2
    finally:
        tail.kill()
        tail.wait()
    # cat and grep -r end at the current end instead of waiting for more.
    assert sh("timeout 20 grep -r -c note .", mnt.path)
    assert subprocess.run(["timeout", "20", "cat", str(events)], capture_output=True).returncode == 0


def test_history_keeps_both_versions(mnt):
    project = mnt / "projects" / "h"
    project.mkdir()
    (project / "doc.md").write_text("one")
    (project / "doc.md").write_text("two")
    history = project / ".history"
    assert ".history" not in os.listdir(project)      # hidden from listings, reachable by name
    versions = sorted(int(v) for v in os.listdir(history))
    contents = [(history / str(v) / "doc.md").read_text() for v in versions if (history / str(v) / "doc.md").exists()]
    assert "one" in contents and "two" in contents
    with pytest.raises(OSError) as err:
        (history / str(versions[-1]) / "doc.md").write_text("three")
    assert err.value.errno == errno.EROFS
    with pytest.raises(OSError) as err:
        os.unlink(history / str(versions[-1]) / "doc.md")
    assert err.value.errno == errno.EROFS


def test_a_past_version_stays_readable_after_many_others_were_read(mnt):
    """Reading more past versions than the daemon keeps rebuilt must not break files of
    the first one, which the kernel still knows by inode."""
    project = mnt / "projects" / "many"
    project.mkdir()
    os.symlink("doc.md", project / "link")
    for i in range(12):
        (project / "doc.md").write_text(f"version {i}")
        os.setxattr(project / "doc.md", "user.v", str(i).encode())
    history = project / ".history"
    versions = [history / v for v in sorted(os.listdir(history), key=int)]
    # The last version still holding "version 0": its setxattr came after its write.
    first = [v for v in versions if (v / "doc.md").exists() and (v / "doc.md").read_text() == "version 0"][-1]
    later = versions[versions.index(first) + 1:]
    assert len(later) > 8     # more past trees than the daemon keeps
    for v in later:
        (v / "doc.md").read_text()
    assert (first / "doc.md").read_text() == "version 0"
    assert os.getxattr(first / "doc.md", "user.v") == b"0"
    assert os.readlink(first / "link") == "doc.md"


def test_copies_and_small_edits_store_no_chunk_twice(mnt):
    import sqlite3
    project = mnt / "projects" / "p"
    project.mkdir()
    data = os.urandom(2 * 1024 * 1024)          # 32 chunks of 64 KiB
    (project / "big").write_bytes(data)
    db = sqlite3.connect(mnt.store[len("sqlite://"):])
    count = lambda: db.execute("SELECT count(*) FROM chunks").fetchone()[0]   # noqa: E731
    before = count()
    sh("cp big copy", project)
    assert count() == before                     # the copy added no chunk
    with open(project / "copy", "r+b") as f:
        f.seek(100_000)
        f.write(b"edit")
    assert count() == before + 1                 # the edit added exactly one
    assert (project / "big").read_bytes() == data
    db.close()
