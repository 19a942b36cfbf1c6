"""O_APPEND from two mounts on one store: a write through an O_APPEND handle lands at
the end of the file as it is when its event is applied, so every acknowledged line is
kept once, whole, on every node and after a replay (issue 10, item 8)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import uuid

import pytest
from tests.harness.mounts import eventually, lighthouse

from lighthousefs.domain.tree import Tree
from lighthousefs.engine.projection import load_tree, replay
from lighthousefs.store import open_store

pytestmark = pytest.mark.mount

LINES = 100
# Each writer prints the numbers of the lines it saw acknowledged: written whole and
# then closed (each: one open per line, as `echo x >> log`) or fsynced (held: one
# handle for every line, fsynced after each batch of 5).
WRITER = r"""
import os, sys
path, tag, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
line = lambda i: b"%s %04d %s\n" % (tag.encode(), i, b"x" * 40)
if mode == "each":
    for i in range(count):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            whole = os.write(fd, line(i)) == len(line(i))
        except OSError:
            whole = False
        try:
            os.close(fd)
        except OSError:
            continue
        if whole:
            print(i, flush=True)
else:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    batch = []
    for i in range(count):
        try:
            if os.write(fd, line(i)) == len(line(i)):
                batch.append(i)
        except OSError:
            pass
        if len(batch) == 5 or i == count - 1:
            try:
                os.fsync(fd)
                print(*batch, sep="\n", flush=True)
            except OSError:
                pass
            batch = []
    os.close(fd)
"""
LINE = re.compile(rb"[ab][0-9] \d{4} x{40}")


def applied(m) -> int:
    return json.loads((m / ".lighthouse" / "health").read_text())["applied_seq"]


def two_mounts(mounter, store: str, request) -> tuple:
    if store == "sqlite":
        return mounter("a"), mounter("b")
    server = request.getfixturevalue("own_server")
    url = f"{server.url}?namespace=t{uuid.uuid4().hex[:10]}"
    return mounter("a", store=url), mounter("b", store=url)


def check_lines(data: bytes, acknowledged: set[bytes]) -> None:
    assert b"\0" not in data, f"{data.count(0)} NUL bytes"
    lines = data.split(b"\n")
    assert lines[-1] == b"", "the file ends in a partial line"
    lines = lines[:-1]
    broken = [text for text in lines if not LINE.fullmatch(text)]
    assert not broken, f"{len(broken)} lines are not whole, e.g. {broken[:3]}"
    doubled = {text for text in lines if lines.count(text) > 1}
    assert not doubled, f"{len(doubled)} lines are there twice, e.g. {sorted(doubled)[:3]}"
    lost = acknowledged - set(lines)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged lines lost, e.g. {sorted(lost)[:3]}"


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_appends_from_two_mounts_keep_every_acknowledged_line(mounter, store, request):
    a, b = two_mounts(mounter, store, request)
    (a / "projects" / "p").mkdir()
    (a / "projects" / "p" / "log").write_bytes(b"")
    eventually(lambda: (b / "projects" / "p" / "log").exists())
    # On each mount: one writer that opens per line, one that holds its handle.
    writers = {f"{m.path.name}{n}": subprocess.Popen(
        [sys.executable, "-c", WRITER, str(m / "projects" / "p" / "log"), f"{m.path.name}{n}", str(LINES),
         "each" if n == 0 else "held"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for m in (a, b) for n in (0, 1)}
    acknowledged = set()
    for tag, proc in writers.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        acknowledged |= {b"%s %04d %s" % (tag.encode(), int(i), b"x" * 40) for i in out.split()}
    # (Failed writes are allowed, though none is expected; lost acknowledged ones are not.)
    assert len(acknowledged) > LINES
    eventually(lambda: applied(a) == applied(b), timeout=30)
    data = (a / "projects" / "p" / "log").read_bytes()
    check_lines(data, acknowledged)
    assert (b / "projects" / "p" / "log").read_bytes() == data
    lighthouse("umount", str(a.path))
    lighthouse("umount", str(b.path))
    # The whole log replayed from its first event (skipped appends included) gives the
    # content the snapshots taken at unmount hold, and a fresh mount serves it.
    store = open_store(a.store)
    try:
        replayed = Tree()
        replay(store, replayed, math.inf)
        snapshot = load_tree(store)
    finally:
        store.close()
    assert [(t.resolve("projects/p/log").size, t.resolve("projects/p/log").chunks) for t in (replayed, snapshot)] \
        == [(len(data), snapshot.resolve("projects/p/log").chunks)] * 2
    fresh = mounter("c", store=a.store)
    assert (fresh / "projects" / "p" / "log").read_bytes() == data


def line(tag: str, i: int = 0) -> bytes:
    return b"%s %04d %s\n" % (tag.encode(), i, b"x" * 40)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_held_append_handles_on_both_mounts_of_a_new_file(mounter, store, request):
    """One interleaving, step by step: a creates the file through an O_APPEND handle;
    b appends and closes while a's handle holds a line not yet stored; a's close then
    appends after b's line instead of replacing it. Then `echo >>` on b and at once on
    a, whose kernel may not know b's line yet."""
    a, b = two_mounts(mounter, store, request)
    (a / "projects" / "p").mkdir()
    eventually(lambda: (b / "projects" / "p").is_dir())
    fa = os.open(a / "projects" / "p" / "new", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fa, line("a0", 1))
        os.fsync(fa)                                   # logged: a new file with one line
        eventually(lambda: (b / "projects" / "p" / "new").read_bytes() == line("a0", 1))
        fb = os.open(b / "projects" / "p" / "new", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fb, line("b0", 2))
            os.write(fa, line("a0", 3))
        finally:
            os.close(fb)
    finally:
        os.close(fa)
    with open(b / "projects" / "p" / "new", "ab") as f:
        f.write(line("b0", 4))
    with open(a / "projects" / "p" / "new", "ab") as f:
        f.write(line("a0", 5))
    expected = line("a0", 1) + line("b0", 2) + line("a0", 3) + line("b0", 4) + line("a0", 5)
    eventually(lambda: applied(a) == applied(b), timeout=30)
    assert (a / "projects" / "p" / "new").read_bytes() == expected
    assert (b / "projects" / "p" / "new").read_bytes() == expected
