"""The Python API and `lighthouse emit` obey the rules of the namespace as a mount does:
an agent's rights, the fixed layout, the formats. A refusal stores nothing and logs one
line naming the rule."""
from __future__ import annotations

import errno
import logging

import pytest

from lighthousefs import cli, errors
from lighthousefs.api import Client


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite://{tmp_path}/store.db"
    with Client(url, actor="alice") as alice:
        alice.write_file("memories/alice/plan.md", b"alice's plan\n")
        alice.write_file("agents/alice/status", b"busy\n")
        alice.write_file("agents/alice/state.json", b'{"step": 1}')
    with Client(url, actor="carol") as carol:
        carol.mkdirs("agents/carol")
    return url


def refused(code: int, fn, *args):
    with pytest.raises(errors.LighthouseError) as err:
        fn(*args)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"
    return err.value


def stored(url: str) -> int:
    with Client(url, actor="operator") as reader:
        return reader.store.last_seq()


def test_an_agent_writes_only_where_its_rights_allow(url, caplog):
    with Client(url, actor="bob") as bob:
        before = stored(url)
        with caplog.at_level(logging.INFO, logger="lighthousefs.api"):
            exc = refused(errno.EACCES, bob.write_file, "memories/alice/plan.md", b"bob was here\n")   # defect 1
        assert str(exc).startswith("privacy: ")
        assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
            f"bob refused (EACCES): {exc}"]   # one line, naming the rule
        problems = []   # each refusal is checked, so one run shows every one that is missing
        for code, fn, *args in ((errno.EACCES, bob.write_file, "memories/alice/new.md", b"x"),
                                (errno.EACCES, bob.write_file, "agents/alice/status", b"idle\n"),
                                (errno.EACCES, bob.mkdirs, "agents/dave"),
                                (errno.EPERM, bob.write_file, "projects/loose.md", b"x"),      # defect 4
                                (errno.EPERM, bob.mkdirs, "elsewhere")):
            try:
                fn(*args)
                problems.append(f"{fn.__name__}{tuple(args)}: no error")
            except errors.LighthouseError as exc:
                if exc.errno != code:
                    problems.append(f"{fn.__name__}{tuple(args)}: {exc!r}")
        assert not problems, problems
        assert stored(url) == before   # nothing of it was stored
        bob.write_file("memories/bob/notes.md", b"mine\n")
        bob.write_file("memories/shared/ours.md", b"ours\n")
        bob.write_file("projects/demo/result.md", b"done\n")
    with Client(url, actor="alice") as alice:
        assert alice.read_file("memories/alice/plan.md") == b"alice's plan\n"
        assert alice.read_file("agents/alice/status") == b"busy\n"


def test_formats_are_checked_before_anything_is_stored(url):
    with Client(url, actor="bob") as bob:
        before = stored(url)
        problems = []
        for code, data, path in ((errno.EINVAL, b"{not json", "agents/bob/state.json"),           # defect 2
                                 (errno.EINVAL, b"one\ntwo\nthree\n", "agents/bob/status"),     # defect 3
                                 (errno.EINVAL, b"", "agents/bob/state.json"),
                                 (errno.EFBIG, b" " * ((1 << 20) + 1), "agents/bob/state.json")):
            try:
                bob.write_file(path, data)
                problems.append(f"{path} {data[:20]!r}: no error")
            except errors.LighthouseError as exc:
                if exc.errno != code:
                    problems.append(f"{path} {data[:20]!r}: {exc!r}")
        assert not problems, problems
        assert stored(url) == before   # not even agents/bob was made
        bob.write_file("agents/bob/state.json", b'{"step": 1}')
        bob.write_file("agents/bob/status", b"one line\n")
        refused(errno.EINVAL, bob.write_file, "agents/bob/state.json", b"[1, 2]")
        assert bob.read_file("agents/bob/state.json") == b'{"step": 1}'
    with Client(url, actor="operator") as operator:   # the operator is bound by formats too
        refused(errno.EINVAL, operator.write_file, "agents/alice/state.json", b"{not json")


def test_annotations_may_not_name_another_agents_memories(url, capsys):
    with Client(url, actor="bob") as bob:
        refused(errno.EACCES, bob.append, "note", "memories/alice/plan.md", {})
        bob.append("note", "memories/bob/x", {})
        bob.append("note", "projects/demo", {})
    before = stored(url)
    # `lighthouse emit` (defect 9): one line on stderr, nothing stored.
    assert cli.main(["emit", "note", "--store", url, "--actor", "bob", "--path", "memories/alice/plan.md"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "privacy: bob may not name memories/alice/plan.md" in err
    assert stored(url) == before
    assert cli.main(["emit", "note", "--store", url, "--actor", "operator", "--path", "memories/alice/plan.md"]) == 0


UNNORMALIZED = ["memories//alice/plan.md", "projects/../memories/alice/plan.md", "memories/./alice",
                "/memories/alice/", "memories/bob/../alice/x"]


def test_annotations_are_judged_by_the_path_readers_see(url, capsys):
    """An annotation's path is normalized as the readers normalize it: one that shows in
    alice's private events is refused to bob, whatever its spelling."""
    before = stored(url)
    with Client(url, actor="bob") as bob:
        for path in UNNORMALIZED:
            err = refused(errno.EACCES, bob.append, "note", path, {})
            assert "memories/alice is private to alice" in str(err), err
        bob.append("note", "memories/./bob/x", {})
        bob.append("note", "memories/shared/../bob", {})
    assert stored(url) == before + 2
    for path in UNNORMALIZED:
        assert cli.main(["emit", "note", "--store", url, "--actor", "bob", "--path", path]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "memories/alice is private to alice" in err, err
    assert stored(url) == before + 2


def test_actors_are_operator_or_valid_agent_names(tmp_path):
    for bad in ("", "shared", "../x"):
        refused(errno.EINVAL, Client, f"sqlite://{tmp_path}/store.db", bad)
