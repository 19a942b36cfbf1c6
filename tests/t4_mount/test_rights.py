"""Rights follow the node, not the path that reached it: agents bob, alice and carol
mount one store; every write is checked against where the node is now, links and
renames never move a node to another area (EXDEV), and other agents' area roots are
neither renamed nor removed (EACCES)."""
from __future__ import annotations

import errno
import os
import subprocess
import uuid

import pytest

from tests.harness.mounts import eventually

pytestmark = pytest.mark.mount


def fails_with(code: int, fn, *args):
    with pytest.raises(OSError) as err:
        fn(*args)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request, store_url) -> str:
    if request.param == "sqlite":
        return store_url
    server = request.getfixturevalue("own_server")
    return f"{server.url}{'&' if '?' in server.url else '?'}namespace=t{uuid.uuid4().hex[:10]}"


def test_rights_follow_the_node(mounter, url):
    problems = []   # each refusal is checked, so one run shows every one that is missing

    def fails_with(code: int, fn, *args):
        try:
            fn(*args)
        except OSError as exc:
            if exc.errno != code:
                problems.append(f"{fn.__name__}{tuple(map(str, args))}: {exc!r}, not {errno.errorcode[code]}")
        else:
            problems.append(f"{fn.__name__}{tuple(map(str, args))}: no error, not {errno.errorcode[code]}")

    alice = mounter("alice", "--agent", "alice", store=url)
    (alice / "agents" / "alice" / "status").write_text("busy\n")
    (alice / "agents" / "alice" / "state.json").write_text('{"step": 1}')
    (alice / "memories" / "alice" / "plan.md").write_text("alice's plan\n")
    mounter("carol", "--agent", "carol", store=url)   # makes agents/carol and memories/carol
    bob = mounter("bob", "--agent", "bob", store=url)   # loads all of it: bob's kernel has looked nothing up
    status = bob / "agents" / "alice" / "status"

    # A listing (readdirplus) puts alice's files in bob's kernel's cache without a
    # LOOKUP: a write reaches the daemon by inode alone, and is refused at open().
    assert sorted(os.listdir(bob / "agents" / "alice")) == ["state.json", "status"]
    fails_with(errno.EACCES, open, status, "w")
    fails_with(errno.EACCES, open, status, "a")
    fails_with(errno.EACCES, os.truncate, status, 0)
    fails_with(errno.EACCES, os.chmod, status, 0o600)
    fails_with(errno.EACCES, os.setxattr, status, "user.x", b"1")

    # A hard link into bob's project would carry alice's state.json into an area he
    # writes: refused for everyone, so nothing is ever written through one.
    (bob / "projects" / "p").mkdir()
    fails_with(errno.EXDEV, os.link, bob / "agents" / "alice" / "state.json", bob / "projects" / "p" / "state")
    fails_with(errno.EACCES, os.rename, bob / "agents" / "alice", bob / "projects" / "p" / "alice")
    fails_with(errno.EACCES, os.rmdir, bob / "agents" / "carol")
    fails_with(errno.EACCES, os.rmdir, bob / "memories" / "carol")
    fails_with(errno.EPERM, os.rename, bob / "agents" / "bob", bob / "agents" / "robert")

    assert not problems, "\n".join(problems)

    # A rename across areas is EXDEV; mv then copies and deletes.
    (bob / "projects" / "p" / "notes.md").write_text("notes\n")
    fails_with(errno.EXDEV, os.rename, bob / "projects" / "p" / "notes.md", bob / "memories" / "bob" / "notes.md")
    subprocess.run(["mv", bob / "projects" / "p" / "notes.md", bob / "memories" / "bob" / "notes.md"], check=True)
    assert (bob / "memories" / "bob" / "notes.md").read_text() == "notes\n"
    assert not (bob / "projects" / "p" / "notes.md").exists()
    (bob / "agents" / "bob" / "status").write_text("fine\n")   # bob's own area: allowed

    # Nothing of alice's or carol's changed, on their mounts or bob's.
    assert status.read_text() == "busy\n"
    assert (bob / "agents" / "alice" / "state.json").read_text() == '{"step": 1}'
    assert (alice / "memories" / "alice" / "plan.md").read_text() == "alice's plan\n"
    assert os.path.isdir(bob / "agents" / "carol") and os.path.isdir(bob / "agents" / "alice")
    eventually(lambda: (alice / "agents" / "bob" / "status").read_text() == "fine\n")
    # Each refusal is one log line naming its rule.
    log = bob.log.read_text()
    assert log.count("ownership: bob may not change agents/alice/status") == 5, log
    assert log.count("areas: a hard link may not take agents/alice/state.json") == 1, log
    assert log.count("ownership: bob may not rename agents/alice") == 1, log


def test_the_operator_is_bound_by_areas_and_layout(mnt):
    """EXDEV is for everyone: the operator's mv copies too, so a node never changes area."""
    (mnt / "agents" / "alice").mkdir()
    (mnt / "agents" / "alice" / "state.json").write_text("{}")
    (mnt / "projects" / "p").mkdir()
    fails_with(errno.EXDEV, os.link, mnt / "agents" / "alice" / "state.json", mnt / "projects" / "p" / "s")
    fails_with(errno.EXDEV, os.rename, mnt / "agents" / "alice" / "state.json", mnt / "projects" / "p" / "s")
    fails_with(errno.EPERM, os.rename, mnt / "agents" / "alice", mnt / "projects" / "p" / "alice")
    fails_with(errno.EPERM, os.rename, mnt / "agents" / "alice", mnt / "agents" / "alicia")
    (mnt / "agents" / "alice" / "status").write_text("operator may\n")
    os.rmdir(mnt / "projects" / "p")


def test_agents_may_not_change_the_layout(mounter, url):
    """The layout's directories, shared area roots included, are no agent's to chmod,
    touch or tag (EPERM); they keep their attributes for everyone."""
    bob = mounter("bob", "--agent", "bob", store=url)
    before = {name: os.stat(bob / name) for name in ("projects", "memories/shared")}
    fails_with(errno.EPERM, os.chmod, bob / "projects", 0o700)
    fails_with(errno.EPERM, os.utime, bob / "projects", (0, 0))
    fails_with(errno.EPERM, os.setxattr, bob / "memories" / "shared", "user.x", b"1")
    fails_with(errno.EPERM, os.chmod, bob / "memories" / "shared", 0o700)
    for name, was in before.items():
        now = os.stat(bob / name)
        assert (now.st_mode, now.st_mtime_ns) == (was.st_mode, was.st_mtime_ns), name
    assert os.listxattr(bob / "memories" / "shared") == []
    (bob / "projects" / "p").mkdir()
    os.chmod(bob / "projects" / "p", 0o700)   # a project is the shared area's: allowed
