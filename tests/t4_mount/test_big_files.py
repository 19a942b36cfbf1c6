"""Size and memory on a real mount: holes cost nothing, sizes past the largest file get
EFBIG, and writing a large file keeps the daemon's memory bounded (full chunks go to
the store as they fill). On SQLite and on Redis.

File operations run in child processes with a timeout: a daemon that materializes a
hole or freezes fails the test instead of hanging it.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid

import pytest

pytestmark = pytest.mark.mount

MIB = 1 << 20
TIB = 1 << 40
MAX_FILE_SIZE = ((1 << 32) - 1) * 4096   # ext4's, and lighthousefs's


@pytest.fixture(params=["sqlite", "redis"])
def store(request, store_url):
    if request.param == "sqlite":
        return store_url
    request.applymarker(pytest.mark.redis)
    server = request.getfixturevalue("own_server")
    return f"{server.url}?namespace=t{uuid.uuid4().hex[:10]}"


def run(m, code: str, *args, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Python code in a child process (with `check`, failing the test if it fails). A
    hang fails the test: the daemon of mount `m` is killed, so the child's request
    (unkillable while the daemon holds it) ends and the child exits."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(m.pid, signal.SIGKILL)
        proc.kill()
        proc.communicate()
        pytest.fail(f"no answer within {timeout} s: the mount froze")
    assert proc.returncode == 0 or not check, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """The daemon's highest RSS while the block runs, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.idle = rss(pid)
        self.peak = self.idle
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.idle

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def largest_event(m) -> int:
    """Bytes of the largest event in a SQLite store."""
    db = m.store.removeprefix("sqlite://")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT max(length(body)) FROM events").fetchone()[0]


SPARSE = """
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    f.write(b"head")
os.truncate(path, size)
fd = os.open(path, os.O_RDWR)
os.pwrite(fd, b"middle", size // 2)
os.pwrite(fd, b"end", size)       # a write past the end
os.close(fd)
fd = os.open(path, os.O_RDONLY)
print(os.fstat(fd).st_size, os.pread(fd, 8, 0), os.pread(fd, 10, size // 2 - 2), os.pread(fd, 5, size - 2),
      os.pread(fd, 100, 12345678), sep="|")
"""


def test_a_terabyte_hole_costs_nothing(mounter, store):
    m = mounter(store=store)
    (m / "projects" / "p").mkdir()
    size = TIB
    with PeakRss(m.pid) as memory:
        out = run(m, SPARSE, m / "projects" / "p" / "sparse", size).stdout
    assert out.strip().split("|") == [str(size + 3), repr(b"head\0\0\0\0"), repr(b"\0\0middle\0\0"),
                                      repr(b"\0\0end"), repr(bytes(100))]
    # Unfixed: a list entry per 64 KiB chunk of the hole, 2.5 GB of memory at 1 TiB.
    assert memory.growth < 100 * MIB, memory.growth
    if store.startswith("sqlite"):
        assert largest_event(m) < 4096      # unfixed: a 371 MB event
    # Another daemon replays the events and reads the same.
    again = mounter("again", store=store)
    with open(again / "projects" / "p" / "sparse", "rb") as f:
        assert os.fstat(f.fileno()).st_size == size + 3
        assert os.pread(f.fileno(), 9, size // 2 - 1) == b"\0middle\0\0"
        assert os.pread(f.fileno(), 4, size - 1) == b"\0end"


BEYOND = """
import errno, os, sys
path, limit = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    f.write(b"kept")
results = []
for size in (999999999999999, limit + 1):
    try:
        os.truncate(path, size)
        results.append("ok")
    except OSError as exc:
        results.append(errno.errorcode[exc.errno])
fd = os.open(path, os.O_WRONLY)
try:
    os.pwrite(fd, b"x", limit)
    results.append("ok")
except OSError as exc:
    results.append(errno.errorcode[exc.errno])
results.append(str(os.pwrite(fd, b"xy", limit - 1)))   # cut short, as on ext4
os.close(fd)
results.append(str(os.stat(path).st_size))              # the largest file is fine, and costs nothing
os.truncate(path, 4)
results.append(open(path, "rb").read().decode())
print(" ".join(results))
"""


def test_a_size_past_the_largest_file_is_efbig(mounter, store):
    """Unfixed, `truncate -s 999999999999999` froze the mount until memory ran out: the
    child's timeout fails the test instead (run it under a memory limit)."""
    m = mounter(store=store)
    (m / "projects" / "p").mkdir()
    out = run(m, BEYOND, m / "projects" / "p" / "f", MAX_FILE_SIZE, timeout=60).stdout
    assert out.split() == ["EFBIG", "EFBIG", "EFBIG", "1", str(MAX_FILE_SIZE), "kept"]
    # The mount still answers.
    (m / "projects" / "p" / "after").write_text("fine")
    assert (m / "projects" / "p" / "after").read_text() == "fine"


LARGE = """
import hashlib, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
digest = hashlib.sha256()
block = os.urandom(1 << 20)
with open(path, "wb") as f:
    for i in range(mib):
        data = i.to_bytes(8, "big") * 131072 if i % 7 == 3 else block[i:] + block[:i]   # distinct chunks
        digest.update(data)
        f.write(data)
print(digest.hexdigest())
"""

READ_BACK = """
import hashlib, sys
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 20):
        digest.update(chunk)
print(digest.hexdigest())
"""


@pytest.mark.slow
def test_writing_a_large_file_keeps_the_daemon_small(mounter, store):
    """Unfixed, an open file was held whole: 565 MB of RSS while copying 256 MiB."""
    m = mounter(store=store)
    (m / "projects" / "p").mkdir()
    path = m / "projects" / "p" / "large"
    with PeakRss(m.pid) as memory:
        written = run(m, LARGE, path, 256, timeout=600, check=False)
    # Spilled chunks stay out of L1; measured: about +20 MiB (unfixed: the whole file and more).
    print(f"daemon RSS: {memory.idle // MIB} MiB idle, +{memory.growth // MIB} MiB at most")
    assert memory.growth < 200 * MIB, memory.growth
    assert written.returncode == 0, written.stderr
    assert os.stat(path).st_size == 256 * MIB
    assert run(m, READ_BACK, path, timeout=600).stdout == written.stdout
