"""Mount, unmount, restart, crash: what was acknowledged is there afterwards."""
from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from tests.harness.mounts import eventually, is_mounted, lighthouse, unmount_quietly
from tests.harness.scenarios import busy_node_still_sees_the_other

from lighthousefs.api import Client
from lighthousefs.store.sqlite import SQLiteStore

pytestmark = pytest.mark.mount


def snapshot_of_tree(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root / "projects"):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else None
            out[os.path.relpath(path, root)] = (st.st_ino, st.st_mode, st.st_size, data)
    return out


def test_restart_shows_the_same_tree_and_inodes(mounter, tmp_path, store_url):
    m = mounter("a")
    (m / "projects" / "p" / "d").mkdir(parents=True)
    for i in range(50):
        (m / "projects" / "p" / "d" / f"f{i}").write_bytes(os.urandom(i * 100))
    os.symlink("d/f1", m / "projects" / "p" / "link")
    before = snapshot_of_tree(m.path)
    lighthouse("umount", str(m.path))   # checked: raises if it fails
    assert not is_mounted(m.path)
    store = SQLiteStore(store_url[len("sqlite://"):])
    try:   # the unmount stored a snapshot, so the next start replays nothing
        assert store.latest_snapshot()[0] == store.last_seq()
    finally:
        store.close()
    again = mounter("a")
    assert snapshot_of_tree(again.path) == before


@pytest.mark.expect_log("a dead mount was left by a killed daemon; detaching it")
def test_kill_9_loses_no_acknowledged_write(mounter, tmp_path):
    m = mounter("a")
    (m / "projects" / "p").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", """
import os, sys
root = sys.argv[1]
for i in range(100000):
    path = os.path.join(root, f"f{i}")
    with open(path, "w") as f:
        f.write(str(i) * 10)
    print(i, flush=True)     # printed only after close() returned
""", str(m / "projects" / "p")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        acknowledged = -1
        for _ in range(200):
            acknowledged = int(writer.stdout.readline())
        os.kill(m.pid, signal.SIGKILL)
        for line in writer.stdout:
            acknowledged = int(line)
        writer.wait(timeout=30)
    finally:
        writer.kill()   # never left behind when the test fails
    # The mount is dead (requests fail; the kernel may still answer from its cache)
    # and the next mount detects and recovers it.
    with pytest.raises(OSError) as err:
        os.statvfs(m.path)
    assert err.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    again = mounter("a")
    for i in range(acknowledged + 1):
        assert (again / "projects" / "p" / f"f{i}").read_text() == str(i) * 10


def test_foreground_stops_cleanly_on_sigterm(tmp_path, store_url):
    path = tmp_path / "fg"
    path.mkdir()
    daemon = subprocess.Popen([sys.executable, "-m", "lighthousefs.cli", "mount", str(path), "--foreground",
                               "--store", store_url, "--log", str(tmp_path / "fg.log")])
    try:
        eventually(lambda: (path / ".lighthouse" / "health").exists())
        (path / "projects" / "p").mkdir()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert not is_mounted(path)
    finally:
        daemon.kill()
        unmount_quietly(path)


def test_corrupt_store_is_refused(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    (tmp_path / "m").mkdir()
    result = lighthouse("mount", str(tmp_path / "m"), "--store", f"sqlite://{bad}", check=False)
    assert result.returncode != 0 and "corrupt" in result.stderr
    assert not is_mounted(tmp_path / "m")


def test_locked_store_is_refused(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t(x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        (tmp_path / "m").mkdir()
        result = lighthouse("mount", str(tmp_path / "m"), "--store", f"sqlite://{path}", check=False)
        assert result.returncode != 0 and "locked" in result.stderr
        assert not is_mounted(tmp_path / "m")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_mounting_twice_is_refused(mounter):
    m = mounter("a")
    result = lighthouse("mount", str(m.path), "--store", m.store, check=False)
    assert result.returncode != 0 and "already" in result.stderr


def test_chown_and_times(mnt):
    path = mnt / "projects" / "p"
    path.mkdir()
    (path / "f").write_text("x")
    os.chown(path / "f", 1234, 5678)
    os.utime(path / "f", ns=(1_000_000_000, 2_000_000_000))
    st = os.stat(path / "f")
    assert (st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns) == (1234, 5678, 1_000_000_000, 2_000_000_000)


def test_status_command(mnt):
    result = lighthouse("status", str(mnt.path))
    assert json.loads(result.stdout.split("\n}\n")[0] + "}")["status"] == "ok"


def test_api_and_emit_reach_the_mount(mnt):
    result = lighthouse("emit", "task.started", "--path", "projects/p", "--data", '{"task": 7}',
                        "--store", mnt.store, "--actor", "planner")
    assert json.loads(result.stdout)["type"] == "task.started"
    with Client(mnt.store, actor="producer") as client:
        client.write_file("projects/api/result.md", b"from the api\n")
        assert client.read_file("projects/api/result.md") == b"from the api\n"
        seqs = [e.seq for e in client.read(0)]
        assert seqs == list(range(1, len(seqs) + 1))
    eventually(lambda: (mnt / "projects" / "api" / "result.md").read_bytes() == b"from the api\n")
    lines = [json.loads(line) for line in (mnt / "events").read_text().splitlines()]
    assert any(e["type"] == "task.started" and e["actor"] == "planner" and e["data"] == {"task": 7} for e in lines)
    bad = lighthouse("emit", "write", "--store", mnt.store, check=False)
    assert bad.returncode != 0 and "reserved" in bad.stderr


def test_two_mounts_on_one_store_see_each_other(mounter):
    a, b = mounter("a"), mounter("b")
    (a / "projects" / "p").mkdir()
    (a / "projects" / "p" / "f").write_text("v1")
    eventually(lambda: (b / "projects" / "p" / "f").read_text() == "v1")
    (b / "projects" / "p" / "f").write_text("v2")
    eventually(lambda: (a / "projects" / "p" / "f").read_text() == "v2")
    os.unlink(b / "projects" / "p" / "f")
    eventually(lambda: not (a / "projects" / "p" / "f").exists())


def test_a_busy_mount_still_sees_another_mount(mounter):
    busy_node_still_sees_the_other(mounter("a"), mounter("b"))


def test_two_writers_last_close_wins_and_history_keeps_both(mounter):
    a, b = mounter("a"), mounter("b")
    (a / "projects" / "p").mkdir()
    (a / "projects" / "p" / "doc").write_text("first")
    eventually(lambda: (b / "projects" / "p" / "doc").exists())   # the file reached b
    fa = open(a / "projects" / "p" / "doc", "w")
    fa.write("from a")
    fb = open(b / "projects" / "p" / "doc", "w")
    fb.write("from b")
    fa.close()
    fb.close()          # closed last: wins everywhere
    eventually(lambda: (a / "projects" / "p" / "doc").read_text() == "from b")
    history = a / "projects" / "p" / ".history"
    versions = [(history / v / "doc") for v in os.listdir(history)]
    assert {v.read_text() for v in versions if v.exists()} >= {"from a", "from b"}


def test_metrics_are_served_and_shown_in_stats(mounter):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = mounter("a", "--metrics", f"127.0.0.1:{port}")
    (m / "projects" / "p").mkdir()
    (m / "projects" / "p" / "f").write_text("x")
    assert (m / "projects" / "p" / "f").read_text() == "x"
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in ('lighthousefs_fuse_op_duration_seconds_bucket{le="0.001",op="mkdir"}',
                 'lighthousefs_journal_events_applied_total{origin="local"}',
                 'lighthousefs_breaker_state{breaker="store"} 0.0',
                 "lighthousefs_process_resident_memory_bytes",
                 'lighthousefs_cache_requests_total{result="miss",tier="l1"}'):
        assert name in scraped, name
    stats = (m / ".lighthouse" / "stats").read_text()
    assert "lighthousefs_fuse_op_duration_seconds_count{op=\"mkdir\"} 1.0" in stats
