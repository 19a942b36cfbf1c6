"""An agent's mount shows it only what it may see: in `events` (read whole or followed
with tail -F) and in a project's `.history`. Renames across areas are refused for new
events, but a store may hold older ones: the tests append those to the store directly."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from unittest import mock

import pytest

from lighthousefs.api import Client
from lighthousefs.domain import events
from lighthousefs.domain.events import Draft
from tests.harness.mounts import eventually, next_line

pytestmark = pytest.mark.mount


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request, tmp_path):
    """Overrides conftest's: the tests of this module run on both stores."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    server = request.getfixturevalue("own_server")
    return f"{server.url}?namespace=t{uuid.uuid4().hex[:10]}"


def store_old_rename(store_url: str, actor: str, source: str, destination: str) -> int:
    """Append a rename as a producer did before renames across areas were refused: an
    event of encoding version 1, which every node applies without the rules."""
    with Client(store_url, actor="operator") as client, mock.patch.object(events, "VERSION", 1):
        tree = client.tree()
        src_dir, _, name = source.rpartition("/")
        dst_dir, _, new_name = destination.rpartition("/")
        draft = Draft(events.RENAME, source, {
            "parent": tree.resolve(src_dir).ino, "name": name.encode(),
            "new_parent": tree.resolve(dst_dir).ino, "new_name": new_name.encode(), "to": destination}, actor)
        [event] = client.store.append([draft], {})
        return event.seq


def lines_of(mount) -> dict[int, dict]:
    return {e["seq"]: e for e in map(json.loads, (mount / "events").read_text().splitlines())}


def test_events_show_a_rename_across_areas_only_on_the_shared_side(mounter, store_url):
    alice = mounter("alice", "--agent", "alice")
    bob = mounter("bob", "--agent", "bob")
    (alice / "projects" / "p").mkdir()
    (alice / "projects" / "p" / "draft.md").write_text("draft")
    (alice / "memories" / "alice" / "notes.md").write_text("mine")
    eventually(lambda: (bob / "projects" / "p" / "draft.md").read_text() == "draft")
    lines_of(bob)   # bob's index is built: what follows reaches it as it is applied
    tail = subprocess.Popen(["tail", "-n", "0", "-F", "-s", "0.1", str(bob / "events")],
                            stdout=subprocess.PIPE, bufsize=0)
    try:
        time.sleep(0.5)     # let tail reach the end before the change (not a timing assertion)
        hidden = store_old_rename(store_url, "alice", "projects/p/draft.md", "memories/alice/secret-name.md")
        shown = store_old_rename(store_url, "alice", "memories/alice/notes.md", "projects/p/published.md")
        line = next_line(tail)
        assert "secret-name" not in line     # the defect: bob saw where alice put it
        assert (json.loads(line)["seq"], json.loads(line)["type"], json.loads(line)["path"]) == (
            hidden, "unlink", "projects/p/draft.md")
        line = next_line(tail)   # before: nothing at all, though the file appeared for bob
        assert (json.loads(line)["seq"], json.loads(line)["type"], json.loads(line)["path"]) == (
            shown, "mknod", "projects/p/published.md")
    finally:
        tail.kill()
        tail.wait()
    eventually(lambda: (bob / "projects" / "p" / "published.md").read_text() == "mine")
    seen = lines_of(bob)
    assert (seen[hidden]["type"], seen[hidden]["actor"]) == ("unlink", "alice")
    assert seen[shown]["data"] == {"parent": os.stat(bob / "projects" / "p").st_ino, "name": "published.md"}
    text = (bob / "events").read_text()
    assert "memories/alice" not in text and "secret-name" not in text and "notes.md" not in text
    # Alice sees her own renames whole; a mount started now builds bob's view alike.
    eventually(lambda: lines_of(alice).get(shown, {}).get("type") == "rename")
    assert lines_of(alice)[hidden]["data"]["to"] == "memories/alice/secret-name.md"
    assert (mounter("bob2", "--agent", "bob") / "events").read_text() == text


def test_history_never_shows_a_project_as_it_was_in_private_memories(mounter, store_url):
    operator = mounter("op")
    bob = mounter("bob", "--agent", "bob")
    secret = operator / "memories" / "alice" / "plans"
    secret.mkdir(parents=True)
    (secret / "takeover.md").write_text("private")
    (operator / "projects" / "demo").mkdir()     # an earlier project of that name...
    (operator / "projects" / "demo" / "old.md").write_text("old")
    os.unlink(operator / "projects" / "demo" / "old.md")
    os.rmdir(operator / "projects" / "demo")      # ...gone, then alice's directory took its name
    store_old_rename(store_url, "alice", "memories/alice/plans", "projects/demo")
    eventually(lambda: (bob / "projects" / "demo" / "takeover.md").read_text() == "private")
    history = bob / "projects" / "demo" / ".history"
    versions = sorted(os.listdir(history), key=int)
    # The versions are those of the earlier projects/demo (the rename is in the scope of
    # its source), times when this directory (the same inode) was alice's memories/alice/plans:
    # bob sees what was at projects/demo then, never alice's directory.
    listed = [os.listdir(history / version) for version in versions]
    assert ["old.md"] in listed and not any("takeover.md" in names for names in listed)
    # The operator sees every version as it was.
    eventually(lambda: (operator / "projects" / "demo" / "takeover.md").read_text() == "private")
    op_history = operator / "projects" / "demo" / ".history"
    assert any("takeover.md" in os.listdir(op_history / v) for v in versions)


def test_changes_to_an_open_but_deleted_private_file_are_shown_to_nobody(mounter, store_url):
    """Before: fchmod, fsetxattr and fremovexattr of an unlinked file were logged under
    `inode/N`, a path in no area, so bob's `events` showed them, the value included."""
    alice = mounter("alice", "--agent", "alice")
    bob = mounter("bob", "--agent", "bob")
    path = alice / "memories" / "alice" / "s"
    path.write_text("x")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        os.setxattr(fd, "user.note", b"the launch code is 1234")
        os.setxattr(fd, "user.other", b"gone soon")
        os.removexattr(fd, "user.other")
        os.fchmod(fd, 0o600)
        os.utime(fd, ns=(1_000_000_000, 2_000_000_000))
        # This mount's kernel still sees the changes on the open file.
        assert os.getxattr(fd, "user.note") == b"the launch code is 1234"
        assert os.listxattr(fd) == ["user.note"]
        assert os.fstat(fd).st_mode & 0o7777 == 0o600
        assert os.fstat(fd).st_mtime_ns == 2_000_000_000
    finally:
        os.close(fd)
    (alice / "projects" / "after").mkdir()
    eventually(lambda: "projects/after" in (bob / "events").read_text())
    for mount in (bob, alice):   # nothing was logged: not even alice's own view holds it
        text = (mount / "events").read_text()
        assert "inode/" not in text and "launch code" not in text and "setxattr" not in text
