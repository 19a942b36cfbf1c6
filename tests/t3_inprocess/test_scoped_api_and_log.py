"""Reading the log without a mount shows an agent only what it may see: the API's read,
read_all and follow (as the client's actor), and `lighthouse log --agent X`."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from lighthousefs.api import Client
from lighthousefs.domain import events
from lighthousefs.domain.events import Draft
from tests.harness.mounts import lighthouse, next_line


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    server = request.getfixturevalue("own_server")
    return f"{server.url}?namespace=t{uuid.uuid4().hex[:10]}"


def private_and_shared(url: str) -> dict[str, int]:
    """alice's private work between shared events, and an old rename out of a project
    into her memories (refused now, but a store may hold one): their seqs by name."""
    with Client(url, actor="alice") as alice:
        seqs = {"project": alice.write_file("projects/p/draft.md", b"draft\n").seq}
        seqs["plan"] = alice.write_file("memories/alice/plan.md", b"mine\n").seq
        seqs["note"] = alice.append("note", "memories/alice/plan.md", {"why": "secret"}).seq
        seqs["odd"] = alice.append("note", "/memories//alice/plan.md").seq
        tree = alice.tree()
        [rename] = alice.store.append([Draft(events.RENAME, "projects/p/draft.md", {
            "parent": tree.resolve("projects/p").ino, "name": b"draft.md",
            "new_parent": tree.resolve("memories/alice").ino, "new_name": b"hidden-name.md",
            "to": "memories/alice/hidden-name.md"}, "alice")], {})
        seqs["rename"] = rename.seq
        seqs["shared"] = alice.append("done", "projects/p", {"n": 1}).seq
    return seqs


def private(text: str) -> bool:
    return "memories/alice" in text or "hidden-name" in text or "secret" in text


def test_api_reads_as_its_actor(url):
    seqs = private_and_shared(url)
    with Client(url, actor="bob", create=False) as bob:
        everything = bob.read(0)
        assert not any(private(e.to_json_line().decode()) for e in everything)
        by_seq = {e.seq: e for e in everything}
        assert seqs["plan"] not in by_seq and seqs["note"] not in by_seq and seqs["odd"] not in by_seq
        assert (by_seq[seqs["rename"]].type, by_seq[seqs["rename"]].path) == ("unlink", "projects/p/draft.md")
        assert seqs["shared"] in by_seq and seqs["project"] in by_seq
        assert list(bob.read_all(0)) == everything
        # A page of `limit` events is full even when hidden events come first.
        assert bob.read(seqs["project"], limit=2) == [by_seq[seqs["rename"]], by_seq[seqs["shared"]]]
        # follow skips what bob may not see and goes on to what he may.
        assert next(bob.follow(seqs["project"])) == by_seq[seqs["rename"]]
    with Client(url, actor="alice", create=False) as alice:
        mine = {e.seq: e for e in alice.read(0)}
        assert mine[seqs["note"]].payload == {"why": "secret"} and mine[seqs["rename"]].type == "rename"
    with Client(url, actor="operator", create=False) as operator:
        assert len(operator.read(0)) == len(list(operator.read_all(0))) > len(everything)


def test_log_as_an_agent_shows_no_private_name(url):
    seqs = private_and_shared(url)
    as_bob = lighthouse("log", "--store", url, "--agent", "bob").stdout
    assert as_bob and not private(as_bob), as_bob
    assert {json.loads(line)["seq"] for line in as_bob.splitlines()} >= {seqs["project"], seqs["rename"],
                                                                         seqs["shared"]}
    everything = lighthouse("log", "--store", url).stdout   # without --agent: the operator's view
    assert "memories/alice/plan.md" in everything and "hidden-name" in everything
    assert "memories/alice/plan.md" in lighthouse("log", "--store", url, "--agent", "alice").stdout
    for bad in ("operator", "../x", "shared", ""):
        result = lighthouse("log", "--store", url, "--agent", bad, check=False)
        assert result.returncode == 2 and "agent" in result.stderr and not result.stdout, bad


def test_log_follow_as_an_agent(url):
    seqs = private_and_shared(url)
    follow = subprocess.Popen([sys.executable, "-m", "lighthousefs.cli", "log", "--store", url, "--agent", "bob",
                               "--after", str(seqs["shared"]), "--follow"], stdout=subprocess.PIPE, bufsize=0)
    try:
        with Client(url, actor="alice") as alice:
            alice.append("note", "memories/alice/later.md", {"why": "secret"})
            last = alice.append("note", "memories/shared/later.md").seq
        line = next_line(follow)
        assert not private(line) and json.loads(line)["seq"] == last
    finally:
        follow.kill()
        follow.wait()
