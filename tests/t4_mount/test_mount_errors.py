"""Bad input gets a precise errno, and what was there stays."""
from __future__ import annotations

import errno
import os

import pytest

from tests.harness.mounts import eventually

pytestmark = pytest.mark.mount


def fails_with(code: int, fn, *args):
    with pytest.raises(OSError) as err:
        fn(*args)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"


def test_names(mnt):
    p = mnt / "projects"
    fails_with(errno.ENAMETOOLONG, os.mkdir, p / ("x" * 256))
    fails_with(errno.ENAMETOOLONG, os.stat, p / ("x" * 256))
    os.mkdir(p / ("x" * 255))
    fails_with(errno.EEXIST, os.mkdir, p / ("x" * 255))
    fails_with(errno.ENOENT, os.stat, p / "missing")


def test_directories(mnt):
    p = mnt / "projects" / "d"
    (p / "a" / "b").mkdir(parents=True)
    fails_with(errno.ENOTEMPTY, os.rmdir, p / "a")
    fails_with(errno.EINVAL, os.rename, p / "a", p / "a" / "b" / "inside")
    fails_with(errno.ENOTDIR, os.rmdir, mnt / "events")
    (p / "f").write_text("f")
    fails_with(errno.ENOTDIR, os.rmdir, p / "f")
    fails_with(errno.EISDIR, os.unlink, p / "a")
    fails_with(errno.ENOTDIR, os.mkdir, p / "f" / "sub")
    fails_with(errno.EISDIR, os.rename, p / "f", p / "a")


def test_layout_is_fixed(mnt):
    fails_with(errno.EPERM, os.mkdir, mnt / "elsewhere")
    fails_with(errno.EPERM, os.rmdir, mnt / "projects")
    fails_with(errno.EPERM, open, mnt / "projects" / "loose-file", "w")
    fails_with(errno.EACCES, open, mnt / "events", "w")
    fails_with(errno.EACCES, open, mnt / ".lighthouse" / "health", "w")


def test_state_json_must_be_valid(mnt):
    agent = mnt / "agents" / "bob"
    agent.mkdir()
    state = agent / "state.json"
    state.write_text('{"step": 1}')
    f = open(state, "w")
    f.write("{not json")
    fails_with(errno.EINVAL, f.close)
    assert state.read_text() == '{"step": 1}'
    # An editor's write-to-temp-then-rename is checked at the rename.
    (agent / "tmp").write_text("[broken")
    fails_with(errno.EINVAL, os.rename, agent / "tmp", state)
    (agent / "tmp").write_text('{"step": 2}')
    os.rename(agent / "tmp", state)
    assert state.read_text() == '{"step": 2}'
    fails_with(errno.EINVAL, os.truncate, state, 0)
    assert state.read_text() == '{"step": 2}'


def test_status_is_one_line(mnt):
    agent = mnt / "agents" / "bob"
    agent.mkdir()
    (agent / "status").write_text("working on X\n")
    f = open(agent / "status", "w")
    f.write("two\nlines\n")
    fails_with(errno.EINVAL, f.close)
    assert (agent / "status").read_text() == "working on X\n"


def test_history_is_read_only(mnt):
    project = mnt / "projects" / "h"
    project.mkdir()
    (project / "f").write_text("1")
    fails_with(errno.EEXIST, os.mkdir, project / ".history")
    version = sorted(os.listdir(project / ".history"), key=int)[-1]
    fails_with(errno.EROFS, os.mkdir, project / ".history" / version / "new")
    fails_with(errno.EROFS, open, project / ".history" / version / "f", "w")
    fails_with(errno.ENOENT, os.stat, project / ".history" / "999999")


def test_read_only_mount(mounter):
    writer = mounter("rw")
    (writer / "projects" / "p").mkdir()
    (writer / "projects" / "p" / "f").write_text("kept")
    reader = mounter("ro", "--read-only")
    assert (reader / "projects" / "p" / "f").read_text() == "kept"   # loaded at mount: no wait
    fails_with(errno.EROFS, open, reader / "projects" / "p" / "f", "w")
    fails_with(errno.EROFS, os.mkdir, reader / "projects" / "q")
    fails_with(errno.EROFS, os.unlink, reader / "projects" / "p" / "f")


def test_agent_identity_and_privacy(mounter):
    operator = mounter("op")
    alice = mounter("alice", "--agent", "alice")
    bob = mounter("bob", "--agent", "bob")
    (alice / "memories" / "alice" / "secret.md").write_text("mine")
    (alice / "memories" / "shared" / "public.md").write_text("ours")
    # Another agent sees shared memories but not alice's.
    eventually(lambda: (bob / "memories" / "shared" / "public.md").read_text() == "ours")
    fails_with(errno.EACCES, os.listdir, bob / "memories" / "alice")
    fails_with(errno.EACCES, open, bob / "memories" / "alice" / "secret.md")
    assert "alice" not in os.listdir(bob / "memories")
    assert (bob / "memories" / "shared" / "public.md").read_text() == "ours"
    (alice / "agents" / "alice" / "status").write_text("busy\n")
    eventually(lambda: (bob / "agents" / "alice" / "status").read_text() == "busy\n")   # readable by all
    fails_with(errno.EACCES, open, bob / "agents" / "alice" / "status", "w")
    fails_with(errno.EACCES, os.chmod, bob / "agents" / "alice", 0o777)
    fails_with(errno.EACCES, os.unlink, bob / "agents" / "alice" / "status")
    fails_with(errno.EACCES, os.mkdir, bob / "agents" / "carol")
    # The operator sees everything; events carry the actor.
    eventually(lambda: (operator / "memories" / "alice" / "secret.md").read_text() == "mine")
    import json
    lines = [json.loads(line) for line in (operator / "events").read_text().splitlines()]
    assert any(e["actor"] == "alice" and e["path"] == "memories/alice/secret.md" for e in lines)
    eventually(lambda: "memories/shared/public.md" in (bob / "events").read_text())
    bob_lines = (bob / "events").read_text()
    assert "memories/alice/" not in bob_lines and "memories/shared/public.md" in bob_lines


def test_bad_agent_id_is_refused(mounter):
    with pytest.raises(RuntimeError, match="agent id"):
        mounter("bad", "--agent", "../x")
