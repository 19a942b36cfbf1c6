"""Bad input never takes the mount down (issue 10, items 12-14).

Names are bytes (not UTF-8 ones too), times the store cannot hold are refused, the
circuit breaker counts only the store's own failures, the fixed entries answer EPERM,
agent names end where they end, and a file's extended attributes have a total size.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid

import msgpack
import pytest
import trio
from tests.harness.mounts import eventually, lighthouse

from lighthousefs import errors
from lighthousefs.domain import events
from lighthousefs.domain.events import Draft, Event
from lighthousefs.domain.rules import check_agent_name
from lighthousefs.domain.tree import PROJECTS_INO, Tree
from lighthousefs.engine.journal import Journal
from lighthousefs.store.breaker import Breaker
from lighthousefs.store.sqlite import SQLiteStore

BAD = b"bad\xffname"          # echo data > $'bad\xffname'
DIR = b"dir\xfe"
PROJECT = b"p\xe9"            # latin-1, as an old tool would write it
XATTRS_TOTAL_MAX = 64 * 1024   # names and values of one file, as the README states


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request, tmp_path):
    """Overrides conftest's: the mount tests of this module run on both stores."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    server = request.getfixturevalue("own_server")
    return f"{server.url}?namespace=t{uuid.uuid4().hex[:10]}"


sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def fails_with(code: int, fn, *args, **kwargs):
    with pytest.raises(OSError) as err:
        fn(*args, **kwargs)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"


def write(path: bytes, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def listing(root: bytes) -> dict[bytes, bytes | None]:
    """Every entry below root by its relative bytes path: a file's content, a symlink's
    target after "->", None for a directory."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = b"->" + os.readlink(path) if os.path.islink(path) else read(path)
    return out


# ---- item 12: names are bytes ------------------------------------------------------------

@pytest.mark.mount
def test_non_utf8_names_are_stored_listed_renamed_and_replayed(mounter):
    a = mounter("a")
    project = os.fsencode(a / "projects") + b"/" + PROJECT
    os.mkdir(project)
    # The issue's shell line, as a shell runs it: a redirect to a new file.
    subprocess.run(["bash", "-c", "echo data > $'bad\\xffname'"], cwd=project, check=True)
    assert read(project + b"/" + BAD) == b"data\n"
    assert BAD in os.listdir(project)
    os.mkdir(project + b"/" + DIR)
    write(project + b"/" + DIR + b"/in\xfd", b"inside")
    os.rename(project + b"/" + BAD, project + b"/" + DIR + b"/moved\xfc")
    write(project + b"/gone\xfb", b"x")
    os.unlink(project + b"/gone\xfb")
    os.symlink(b"target\xfa", project + b"/link\xf9")
    expected = {DIR: None, DIR + b"/in\xfd": b"inside", DIR + b"/moved\xfc": b"data\n",
                b"link\xf9": b"->target\xfa"}
    assert listing(project) == expected

    # The events file: JSON lines whose paths and names give back the same bytes.
    lines = [json.loads(line) for line in read(os.fsencode(a / "events")).splitlines()]
    paths = {os.fsencode(line["path"]) for line in lines}
    assert b"projects/" + PROJECT + b"/" + BAD in paths
    [renamed] = [line for line in lines if line["type"] == "rename"]
    assert os.fsencode(renamed["data"]["to"]) == b"projects/" + PROJECT + b"/" + DIR + b"/moved\xfc"
    assert os.fsencode(renamed["data"]["new_name"]) == b"moved\xfc"

    # .history shows the names as they were.
    last = max(os.listdir(project + b"/.history"), key=int)
    assert sorted(os.listdir(project + b"/.history/" + last + b"/" + DIR)) == [b"in\xfd", b"moved\xfc"]

    # A second mount replays them, and follows what the first does next.
    b = mounter("b")
    other = os.fsencode(b / "projects") + b"/" + PROJECT
    assert listing(other) == expected
    os.rename(project + b"/" + DIR + b"/moved\xfc", project + b"/back\xf8")
    os.mkdir(project + b"/" + DIR + b"/sub\xf7")
    final = {DIR: None, DIR + b"/in\xfd": b"inside", DIR + b"/sub\xf7": None, b"back\xf8": b"data\n",
             b"link\xf9": b"->target\xfa"}
    eventually(lambda: listing(other) == final)

    # A fresh daemon replays the same tree from the store.
    for m in (a, b):
        lighthouse("umount", str(m.path))
    c = mounter("c")
    again = os.fsencode(c / "projects") + b"/" + PROJECT
    assert listing(again) == final


def test_event_codec_keeps_non_utf8_paths_and_reads_old_events():
    draft = Draft(events.RENAME, "projects/p/bad\udcffname",
                  {"parent": 9, "name": b"bad\xffname", "new_name": b"x\xfe", "to": "projects/p/x\udcfe"}, "bob")
    event = events.decode(5, events.encode(123, draft))
    assert (event.path, event.payload) == (draft.path, draft.payload)
    # An event stored before this change (strict UTF-8) reads as it did.
    old = msgpack.packb([1, 7, "bob", "mknod", "projects/p/é", {"name": "é".encode()}], use_bin_type=True)
    assert events.decode(3, old).path == "projects/p/é"


def test_json_lines_escape_non_utf8_bytes_losslessly():
    event = Event(4, 10**18, "bob", events.RENAME, "projects/p/bad\udcffname",
                  {"name": b"bad\xffname", "to": "projects/p/\u00e9\udcfe", "value": b"\x00\x80"})
    line = event.to_json_line()
    record = json.loads(line.decode("utf-8"))   # valid UTF-8, valid JSON
    assert os.fsencode(record["path"]) == b"projects/p/bad\xffname"
    assert os.fsencode(record["data"]["name"]) == b"bad\xffname"
    assert record["data"]["to"].encode("utf-8", "surrogateescape") == "projects/p/é".encode() + b"\xfe"
    assert os.fsencode(record["data"]["value"]) == b"\x00\x80"
    assert "é".encode() in line   # UTF-8 stays readable, only the bytes that are not UTF-8 are escaped


# ---- item 13: times, and what the breaker counts -------------------------------------------

@pytest.mark.mount
def test_times_the_store_cannot_hold_are_refused_and_leave_the_mount_up(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    f = project / "f"
    f.write_text("x")
    before = os.stat(f).st_mtime_ns
    for _ in range(3):   # three of them opened the circuit breaker
        result = subprocess.run(["touch", "-m", "-d", "@99999999999", str(f)], capture_output=True, text=True)
        assert result.returncode != 0 and "Invalid argument" in result.stderr, result
    fails_with(errno.EINVAL, os.utime, f, ns=(0, -10**20))
    fails_with(errno.EINVAL, os.utime, f, ns=(10**20, 0))
    assert os.stat(f).st_mtime_ns == before
    # Writes of another file work at once: nothing counted as a store failure.
    (project / "g").write_text("still up")
    assert (project / "g").read_text() == "still up"
    far = 7_258_118_400 * 10**9 + 123   # 2200-01-01: far, but the store holds it
    os.utime(f, ns=(far, far))
    assert os.stat(f).st_mtime_ns == far


def test_the_tree_refuses_times_out_of_range():
    tree = Tree()
    tree.apply(Event(1, 1, "", events.MKNOD, "projects/p", {"parent": PROJECTS_INO, "name": b"p", "mode": 0o40755}))
    tree.apply(Event(2, 2, "", events.MKNOD, "projects/p/f", {"parent": events.ino_for_seq(1), "name": b"f",
                                                            "mode": 0o100644}))
    ino = events.ino_for_seq(2)
    for bad in (2**63, -2**63 - 1, 10**20, "soon", 1.5):
        with pytest.raises(errors.InvalidArgument):
            tree.check(Draft(events.SETATTR, "projects/f", {"ino": ino, "mtime": bad}))
        with pytest.raises(errors.InvalidArgument):
            tree.check(Draft(events.WRITE, "projects/f", {"ino": ino, "size": 0, "chunks": [], "mtime": bad}))
    tree.check(Draft(events.SETATTR, "projects/f", {"ino": ino, "atime": -2**63, "mtime": 2**63 - 1}))


# ---- item 14: fixed entries, agent names, xattrs ------------------------------------------

@sqlite_only
@pytest.mark.mount
def test_fixed_entries_and_control_files_answer_eperm(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    (project / "f").write_text("f")
    fails_with(errno.EPERM, os.unlink, mnt / "events")
    fails_with(errno.EPERM, os.rename, mnt / "events", mnt / "x")
    fails_with(errno.EPERM, os.rename, mnt / "events", project / "x")
    fails_with(errno.EPERM, os.rmdir, mnt / ".lighthouse")
    fails_with(errno.EPERM, os.rename, mnt / ".lighthouse", project / "x")
    fails_with(errno.EPERM, os.unlink, mnt / ".lighthouse" / "stats")
    fails_with(errno.EPERM, os.rename, mnt / ".lighthouse" / "stats", project / "s")
    fails_with(errno.EPERM, os.rename, project / "f", mnt / "events")
    fails_with(errno.EPERM, os.rename, project / "f", mnt / ".lighthouse" / "stats")
    fails_with(errno.EPERM, os.link, mnt / "events", project / "e")
    fails_with(errno.EPERM, os.chmod, mnt / "events", 0o666)
    fails_with(errno.EPERM, os.utime, mnt / ".lighthouse" / "stats")
    fails_with(errno.EPERM, os.setxattr, mnt / "events", "user.x", b"1")
    assert (mnt / "events").is_file() and (mnt / ".lighthouse" / "stats").is_file()
    assert (project / "f").read_text() == "f"


def test_agent_names_with_a_trailing_newline_are_refused():
    for name in ("bob\n", "bob\n\n", "\nbob"):
        with pytest.raises(errors.InvalidArgument):
            check_agent_name(name)
    check_agent_name("bob")


@sqlite_only
@pytest.mark.mount
def test_agent_directories_with_a_trailing_newline_are_refused(mnt):
    fails_with(errno.EINVAL, os.mkdir, mnt / "agents" / "bob\n")
    fails_with(errno.EINVAL, os.mkdir, mnt / "memories" / "bob\n")
    os.mkdir(mnt / "agents" / "bob")
    assert os.listdir(mnt / "agents") == ["bob"]


@sqlite_only
@pytest.mark.mount
def test_xattrs_of_a_file_are_capped_in_total(mnt):
    project = mnt / "projects" / "p"
    project.mkdir()
    f = project / "f"
    f.write_text("x")
    value = b"v" * 1000
    with pytest.raises(OSError) as err:
        for n in range(1500):
            os.setxattr(f, f"user.attribute-{n:04d}", value)
    assert err.value.errno == errno.ENOSPC
    names = os.listxattr(f)   # E2BIG before: the list outgrew what the kernel accepts
    assert len(names) == n
    assert sum(len(name) + 1 + len(value) for name in names) <= XATTRS_TOTAL_MAX
    assert all(os.getxattr(f, name) == value for name in names)
    os.setxattr(f, names[0], b"shorter")   # a smaller value for an existing name fits
    os.removexattr(f, names[1])             # and a removal makes room
    os.setxattr(f, "user.new", value)
    assert os.getxattr(f, "user.new") == value


def test_the_xattr_cap_is_checked_by_the_tree_so_replay_agrees():
    tree = Tree()
    tree.apply(Event(1, 1, "", events.MKNOD, "projects/p", {"parent": PROJECTS_INO, "name": b"p", "mode": 0o40755}))
    tree.apply(Event(2, 2, "", events.MKNOD, "projects/p/f", {"parent": events.ino_for_seq(1), "name": b"f",
                                                            "mode": 0o100644}))
    ino = events.ino_for_seq(2)
    big = b"v" * (XATTRS_TOTAL_MAX - len(b"user.a") - 1)   # each name counts with its NUL
    draft = Draft(events.SETXATTR, "projects/f", {"ino": ino, "name": b"user.a", "value": big})
    tree.check(draft)
    assert tree.apply(Event(3, 3, "", draft.type, draft.path, draft.payload)) is not None
    one_more = Draft(events.SETXATTR, "projects/f", {"ino": ino, "name": b"user.b", "value": b""})
    with pytest.raises(errors.LighthouseError) as err:
        tree.check(one_more)
    assert err.value.errno == errno.ENOSPC
    # An event past the cap that reached the log anyway is skipped on every replay alike.
    assert tree.apply(Event(4, 4, "", one_more.type, one_more.path, one_more.payload)) is None
    assert list(tree.nodes[ino].xattrs) == [b"user.a"]


def test_a_draft_the_codec_cannot_store_fails_alone_and_keeps_the_breaker_closed(tmp_path):
    """A gap in the checks (a bug) fails its own caller, not the group commit of others,
    and does not count as a failure of the store."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    breaker = Breaker("store", failure_threshold=1)
    journal = Journal(store, Tree(), "test", breaker=breaker)
    outcomes = {}

    async def submit(key, draft):
        try:
            outcomes[key] = await journal.submit([draft])
        except Exception as exc:
            outcomes[key] = exc

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run_committer)
            for i in range(3):
                nursery.start_soon(submit, f"bad{i}", Draft("note", "projects/a", {"when": 10**20}))
            nursery.start_soon(submit, "good", Draft("note", "projects/a", {"i": 1}))
            while len(outcomes) < 4:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()
    assert all(isinstance(outcomes[f"bad{i}"], OverflowError) for i in range(3)), outcomes
    [(event, _)] = outcomes["good"]
    assert event.payload == {"i": 1}
    assert breaker.state == "closed"


def test_a_redis_namespace_with_a_trailing_newline_is_refused():
    from lighthousefs.store.redis import RedisStore
    with pytest.raises(errors.StoreOpenError, match="must match"):
        RedisStore("redis://127.0.0.1:1/0?namespace=ns%0A")   # refused before connecting
