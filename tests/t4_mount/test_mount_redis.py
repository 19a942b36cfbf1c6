"""Shared mode: several daemons on one Redis (standalone and a 3-master Cluster), and
what happens to a mount when Redis dies, comes back, or comes back empty."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.harness.mounts import eventually, lighthouse
from tests.harness.scenarios import busy_node_still_sees_the_other
from tests.harness.redis_servers import RedisServer

pytestmark = [pytest.mark.mount, pytest.mark.redis]


def namespaced(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}namespace=t{uuid.uuid4().hex[:10]}"


def run(code: str, *args, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a file operation in a child process: a hang fails the test instead of freezing it."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


WRITE = "import sys\nwith open(sys.argv[1], 'w') as f: f.write(sys.argv[2])"
MKDIR = "import os, sys; os.mkdir(sys.argv[1])"
READ = "import sys; print(open(sys.argv[1]).read(), end='')"


def test_three_daemons_on_a_cluster_share_one_namespace(mounter, cluster):
    url = namespaced(cluster.url)
    a, b, c = (mounter(name, store=url) for name in "abc")
    (a / "projects" / "p").mkdir()
    (a / "projects" / "p" / "f").write_text("from a")
    eventually(lambda: (b / "projects" / "p" / "f").read_text() == "from a")
    eventually(lambda: (c / "projects" / "p" / "f").read_text() == "from a")
    # a named the inode before the file was logged (a reserved range): one number everywhere.
    assert len({os.stat(m / "projects" / "p" / "f").st_ino for m in (a, b, c)}) == 1
    (c / "projects" / "p" / "f").write_text("from c")
    eventually(lambda: (a / "projects" / "p" / "f").read_text() == "from c")
    os.unlink(b / "projects" / "p" / "f")
    for m in (a, c):
        eventually(lambda m=m: not (m / "projects" / "p" / "f").exists())
    with pytest.raises(FileNotFoundError):
        (a / "projects" / "p" / "f").read_text()


def test_negative_lookups_are_invalidated_across_nodes(mounter, own_server):
    url = namespaced(own_server.url)
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "p").mkdir()
    eventually(lambda: (b / "projects" / "p").is_dir())
    assert not (b / "projects" / "p" / "late").exists()     # now a cached negative entry on b
    (a / "projects" / "p" / "late").write_text("here")
    eventually(lambda: (b / "projects" / "p" / "late").read_text() == "here")


def test_attributes_changed_on_one_node_are_fresh_on_the_other(mounter, own_server):
    """b has listed and stat'ed the files (its kernel and its attribute objects hold
    them); a changes mode, size and times; b sees the new values, in stat and in a listing."""
    url = namespaced(own_server.url)
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "p").mkdir()
    for i in range(20):
        (a / "projects" / "p" / f"f{i}").write_text("x")
    eventually(lambda: len(os.listdir(b / "projects" / "p")) == 20)
    before = {e.name: e.stat() for e in os.scandir(b / "projects" / "p")}
    assert {st.st_size for st in before.values()} == {1}
    for i in range(20):
        os.chmod(a / "projects" / "p" / f"f{i}", 0o600)
        (a / "projects" / "p" / f"f{i}").write_text("longer")
        os.utime(a / "projects" / "p" / f"f{i}", ns=(10**18, 10**18))

    def fresh():
        now = {e.name: e.stat() for e in os.scandir(b / "projects" / "p")}
        return len(now) == 20 and all((st.st_mode & 0o777, st.st_size, st.st_mtime_ns) == (0o600, 6, 10**18)
                                      for st in now.values())
    eventually(fresh)
    st = os.stat(b / "projects" / "p" / "f7")
    assert (st.st_mode & 0o777, st.st_size, st.st_mtime_ns) == (0o600, 6, 10**18)


def test_a_log_appended_on_one_node_reads_whole_on_the_other(mounter, own_server):
    """The log's tail is stored as pieces; the other node (nothing in its L1) fetches
    them and reads every appended line, in order."""
    url = namespaced(own_server.url)
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "p").mkdir()
    log = a / "projects" / "p" / "log"
    log.write_bytes(b"head\n" * 8000)                    # 40,000 bytes: a tail of pieces
    expected = b"head\n" * 8000
    for i in range(300):
        line = b"line %05d\n" % i
        with open(log, "ab") as f:
            f.write(line)
        expected += line
    assert log.read_bytes() == expected
    eventually(lambda: (b / "projects" / "p" / "log").read_bytes() == expected)


def test_a_busy_node_still_sees_another_node(mounter, own_server):
    url = namespaced(own_server.url)
    busy_node_still_sees_the_other(mounter("a", store=url), mounter("b", store=url))


@pytest.mark.expect_log("following the store failed; retrying", "circuit opens after",
                        "store circuit ", "store housekeeping failed, retrying later",
                        "following the store again", "snapshot at \\d+ not stored")
def test_redis_down_fails_fast_then_recovers(mounter, own_server):
    url = namespaced(own_server.url)
    m = mounter("a", store=url)
    project = m / "projects" / "p"
    project.mkdir()
    (project / "kept").write_text("cached")
    assert (project / "kept").read_text() == "cached"
    own_server.kill()
    # Writes fail with EIO instead of hanging; what is in memory keeps being served.
    for _ in range(5):
        result = run(WRITE, project / "new", "x")
        assert result.returncode != 0 and "Input/output error" in result.stderr, result.stderr
    assert run(MKDIR, project / "d").returncode != 0
    assert run(READ, project / "kept").stdout == "cached"
    assert sorted(os.listdir(project)) == ["kept"]
    own_server.restart(keep_data=True)
    # The breaker probes and closes by itself.
    eventually(lambda: run(WRITE, project / "new", "x").returncode == 0, timeout=30, interval=0.2)
    assert (project / "new").read_text() == "x"
    assert "store circuit closed -> open" in m.log.read_text()


@pytest.mark.expect_log("Redis lost its data", "THE STORE LOST DATA THIS DAEMON HAD SEEN",
                        "snapshot at \\d+ not stored", "following the store failed; retrying", "store circuit \\S+ -> \\S+", "circuit opens after")
def test_redis_restarted_empty_is_refused_loudly(mounter, own_server):
    url = namespaced(own_server.url)
    m = mounter("a", store=url)
    (m / "projects" / "p").mkdir()
    (m / "projects" / "p" / "f").write_text("before")
    own_server.restart(keep_data=False)
    # Every change is refused from now on; the last consistent state is still readable.
    eventually(lambda: run(WRITE, m / "projects" / "p" / "g", "x").returncode != 0, timeout=30, interval=0.2)
    assert run(WRITE, m / "projects" / "p" / "f", "after").returncode != 0
    assert (m / "projects" / "p" / "f").read_text() == "before"
    eventually(lambda: "THE STORE LOST DATA" in m.log.read_text())


@pytest.mark.expect_log("a dead mount was left by a killed daemon; detaching it")
def test_a_killed_daemon_resumes_where_it_stopped(mounter, own_server):
    url = namespaced(own_server.url)
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "p").mkdir()
    eventually(lambda: (b / "projects" / "p").is_dir())
    os.kill(b.pid, 9)
    for i in range(20):
        (a / "projects" / "p" / f"f{i}").write_text(str(i))
    b2 = mounter("b", store=url)        # recovers the dead mountpoint, catches up
    eventually(lambda: sorted(os.listdir(b2 / "projects" / "p")) == sorted(f"f{i}" for i in range(20)))
    assert all((b2 / "projects" / "p" / f"f{i}").read_text() == str(i) for i in range(20))


def test_wrong_password_is_refused_at_mount(tmp_path):
    with RedisServer(password="right") as srv:
        bad = srv.url.replace("right", "Xy7-not-the-password")
        (tmp_path / "m").mkdir()
        result = lighthouse("mount", str(tmp_path / "m"), "--store", bad, check=False)
        assert result.returncode != 0 and "credentials" in result.stderr
        assert "Xy7-not-the-password" not in result.stderr   # the password is not echoed
