"""The API's file verbs (Client.files) as agents: each refuses what the agent's mount
refuses, with the same errno (tests/t4_mount/test_api_vs_mount.py compares the two at
random), and does what it says."""
from __future__ import annotations

import errno
import json

import pytest

from lighthousefs import errors
from lighthousefs.api import Client
from lighthousefs.domain import chunks


def fails_with(code: int, fn, *args):
    with pytest.raises(errors.LighthouseError) as err:
        fn(*args)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite://{tmp_path}/store.db"
    with Client(url, actor="operator") as op:
        for path in ("memories/alice", "memories/bob", "agents/alice", "agents/bob", "projects/p"):
            op.files.mkdir(path)
        op.files.write("memories/alice/plan.md", b"alice's plan\n")
        op.files.write("agents/alice/status", b"idle\n")
    return url


@pytest.fixture
def alice(url):
    with Client(url, actor="alice") as client:
        yield client.files


@pytest.fixture
def bob(url):
    with Client(url, actor="bob") as client:
        yield client.files


def test_an_agent_neither_reads_nor_lists_nor_changes_another_agents_memories(alice, bob):
    assert alice.read("memories/alice/plan.md") == b"alice's plan\n"
    fails_with(errno.EACCES, bob.read, "memories/alice/plan.md")
    fails_with(errno.EACCES, bob.stat, "memories/alice")
    fails_with(errno.EACCES, bob.stat, "memories/carol")   # as the mount: whether it exists or not
    fails_with(errno.EACCES, bob.list, "memories/alice")
    fails_with(errno.EACCES, bob.write, "memories/alice/plan.md", b"bob's now")
    fails_with(errno.EACCES, bob.append, "memories/alice/plan.md", b"and bob's")
    fails_with(errno.EACCES, bob.delete, "memories/alice/plan.md")
    fails_with(errno.EACCES, bob.rename, "memories/alice/plan.md", "memories/bob/plan.md")
    fails_with(errno.EACCES, bob.mkdir, "memories/alice/sub")
    assert bob.list("memories") == ["bob", "shared"]
    assert alice.list("memories") == ["alice", "shared"]
    assert alice.read("memories/alice/plan.md") == b"alice's plan\n"
    with Client(alice.store.url, actor="operator") as op:
        assert op.files.list("memories") == ["alice", "bob", "shared"]


def test_an_agent_writes_only_its_own_agents_directory(alice, bob):
    fails_with(errno.EACCES, bob.write, "agents/alice/status", b"bob was here\n")
    fails_with(errno.EACCES, bob.delete, "agents/alice/status")
    fails_with(errno.EACCES, bob.mkdir, "agents/carol")
    bob.write("agents/bob/status", b"working\n")
    assert alice.read("agents/bob/status") == b"working\n"   # everyone reads
    assert bob.read("agents/alice/status") == b"idle\n"


def test_the_layout_is_fixed(bob):
    fails_with(errno.EPERM, bob.write, "projects/loose.md", b"x")
    fails_with(errno.EPERM, bob.write, "top.md", b"x")
    fails_with(errno.EPERM, bob.mkdir, "elsewhere")
    fails_with(errno.EPERM, bob.delete, "projects")
    fails_with(errno.EPERM, bob.delete, "memories/shared")
    fails_with(errno.EPERM, bob.delete, "events")
    fails_with(errno.EINVAL, bob.mkdir, "agents/not a name")
    fails_with(errno.EINVAL, bob.mkdir, "agents/bob/state.json")   # a state.json is a file
    fails_with(errno.EINVAL, bob.read, "projects/../memories/alice/plan.md")
    fails_with(errno.ENAMETOOLONG, bob.stat, "projects/" + "x" * 256)


def test_formats_are_checked_before_anything_is_stored(bob):
    state = "agents/bob/state.json"
    fails_with(errno.EINVAL, bob.write, state, b"")          # never empty
    fails_with(errno.EINVAL, bob.write, state, b"{not json")
    assert not bob.exists(state)
    bob.write(state, b'{"step": 1}')
    fails_with(errno.EINVAL, bob.write, state, b'{"step": ')
    fails_with(errno.EINVAL, bob.append, state, b"garbage")
    fails_with(errno.EFBIG, bob.write, state, json.dumps({"x": "y" * (1 << 20)}).encode())
    assert bob.read(state) == b'{"step": 1}'
    bob.write("agents/bob/draft", b"[not an object]")
    fails_with(errno.EINVAL, bob.rename, "agents/bob/draft", state)   # an editor's temp file, checked at the rename
    assert bob.read(state) == b'{"step": 1}'
    fails_with(errno.EINVAL, bob.write, "agents/bob/status", b"two\nlines\n")
    bob.write("agents/bob/status", b"idle")
    bob.append("agents/bob/status", b"\n")
    fails_with(errno.EINVAL, bob.append, "agents/bob/status", b"more")
    assert bob.read("agents/bob/status") == b"idle\n"


def test_write_append_read_stat_list(bob):
    fails_with(errno.ENOENT, bob.write, "projects/p/d/f.md", b"x")   # the directory must exist
    bob.write("projects/p/d/f.md", b"one\n", parents=True)
    bob.append("projects/p/d/f.md", b"two\n")
    assert bob.append("projects/p/d/f.md", b"") is None
    bob.append("projects/p/d/log", b"new\n")   # an append creates, as O_APPEND|O_CREAT does
    assert bob.read("projects/p/d/f.md") == b"one\ntwo\n"
    assert bob.list("projects/p/d") == ["f.md", "log"]
    st = bob.stat("projects/p/d/f.md")
    assert (st.kind, st.size, st.nlink, st.mode & 0o777) == ("file", 8, 1, 0o644)
    assert bob.stat("projects/p/d").kind == "dir"
    assert [(name, s.kind) for name, s in bob.list("projects/p", stats=True)] == [("d", "dir")]
    fails_with(errno.EISDIR, bob.read, "projects/p/d")
    fails_with(errno.EISDIR, bob.write, "projects/p/d", b"x")
    fails_with(errno.ENOTDIR, bob.list, "projects/p/d/f.md")
    fails_with(errno.ENOTDIR, bob.read, "projects/p/d/f.md/x")
    fails_with(errno.ENOENT, bob.read, "projects/p/missing")
    fails_with(errno.EEXIST, bob.mkdir, "projects/p/d")


def test_append_keeps_the_full_chunks_and_rewrites_only_the_tail(bob):
    body = bytes(range(256)) * 300   # one full 64 KiB chunk and a partial one
    bob.write("projects/p/big", body)
    event = bob.append("projects/p/big", b"end\n")
    assert bob.read("projects/p/big") == body + b"end\n"
    assert event.payload["chunks"][0] == chunks.split(body)[0][0]
    assert event.payload["chunks"] == chunks.split(body + b"end\n")[0]


def test_an_append_lands_after_what_another_producer_wrote_meanwhile(url, bob, monkeypatch):
    bob.write("projects/p/log", b"1\n")
    with Client(url, actor="alice") as other:
        real_append = bob.store.append
        raced = []

        def append(drafts, new_chunks, *args):
            if not raced:   # another producer's write lands between bob's check and his append
                raced.append(other.files.write("projects/p/log", b"replaced\n"))
            return real_append(drafts, new_chunks, *args)
        monkeypatch.setattr(bob.store, "append", append)
        bob.append("projects/p/log", b"2\n")
    assert bob.read("projects/p/log") == b"replaced\n2\n"


def test_edit_runs_again_on_the_content_another_producer_wrote_meanwhile(url, bob, monkeypatch):
    bob.write("projects/p/notes", b"a\n")
    seen = []
    with Client(url, actor="alice") as other:
        def change(data: bytes) -> bytes:
            seen.append(data)
            if len(seen) == 1:
                other.files.write("projects/p/notes", b"b\n")   # after bob read, before he writes
            return data + b"edited\n"
        bob.edit("projects/p/notes", change)
    assert seen == [b"a\n", b"b\n"]
    assert bob.read("projects/p/notes") == b"b\nedited\n"


def test_rename_and_delete(bob):
    bob.mkdir("projects/p/a")
    bob.mkdir("projects/p/a/b")
    bob.write("projects/p/f", b"f")
    fails_with(errno.EINVAL, bob.rename, "projects/p/a", "projects/p/a/b/c")
    fails_with(errno.ENOTEMPTY, bob.rename, "projects/p/a/b", "projects/p/a")
    fails_with(errno.EISDIR, bob.rename, "projects/p/f", "projects/p/a")
    fails_with(errno.ENOTDIR, bob.rename, "projects/p/a", "projects/p/f")
    fails_with(errno.ENOENT, bob.rename, "projects/p/missing", "projects/p/g")
    assert bob.rename("projects/p/f", "projects/p/f") is None
    bob.rename("projects/p/f", "projects/p/a/g")
    assert bob.list("projects/p/a") == ["b", "g"]
    fails_with(errno.ENOTEMPTY, bob.delete, "projects/p/a")
    bob.delete("projects/p/a/g")
    bob.delete("projects/p/a/b")
    bob.delete("projects/p/a")
    fails_with(errno.ENOENT, bob.delete, "projects/p/a")
    assert bob.list("projects/p") == []


def test_an_actor_other_than_operator_is_an_agent_with_a_valid_name(url):
    for name in ("shared", "bad name", ""):
        fails_with(errno.EINVAL, Client, url, name)


def test_a_projects_history_gets_the_mounts_errnos(url):
    """.history is a read-only directory on a mount; the API answers as the mount does
    (tests/t4_mount/test_api_vs_mount.py compares the two)."""
    with Client(url, actor="bob") as bob:
        files = bob.files
        files.write("projects/p/a.md", b"a", parents=True)
        for code, fn, *args in ((errno.EISDIR, files.write, "projects/p/.history", b"x"),
                                (errno.EISDIR, files.append, "projects/p/.history", b"x"),
                                (errno.EISDIR, files.read, "projects/p/.history"),
                                (errno.EISDIR, files.rename, "projects/p/a.md", "projects/p/.history"),
                                (errno.EINVAL, files.rename, "projects/p", "projects/p/.history"),
                                (errno.ENOENT, files.rename, "projects/q", "projects/p/.history"),
                                (errno.EROFS, files.delete, "projects/p/.history"),
                                (errno.EROFS, files.write, "projects/p/.history/x", b"x"),
                                (errno.EROFS, files.mkdir, "projects/p/.history/d"),
                                (errno.EEXIST, files.mkdir, "projects/p/.history")):
            fails_with(code, fn, *args)
        assert files.list("projects/p") == ["a.md"]
