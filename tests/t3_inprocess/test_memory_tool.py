"""The memory tool (view, create, str_replace, insert, delete, rename) over the API's
file verbs, as an agent: what each command does, and its errors as the text a model sees."""
from __future__ import annotations

import errno

import pytest

from lighthousefs import errors
from lighthousefs.api import Client
from lighthousefs.memory_tool import MemoryTool


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite://{tmp_path}/store.db"


@pytest.fixture
def tool(url):
    with Client(url, actor="alice") as client:
        yield MemoryTool(client.files)


def test_create_view_and_edit_a_memory(tool):
    assert tool.create("/memories/alice/plan.md", "one\ntwo\nthree\n") == \
        "File created successfully at /memories/alice/plan.md"   # its directory is made
    assert tool.view("/memories/alice/plan.md") == "     1\tone\n     2\ttwo\n     3\tthree"
    assert tool.view("/memories/alice/plan.md", [2, -1]) == "     2\ttwo\n     3\tthree"
    tool.str_replace("/memories/alice/plan.md", "two", "2")
    tool.insert("/memories/alice/plan.md", 0, "zero")
    tool.insert("/memories/alice/plan.md", 4, "four\n")
    tool.insert("/memories/alice/plan.md", 2, "1.5\n")
    assert tool.files.read("memories/alice/plan.md") == b"zero\none\n1.5\n2\nthree\nfour\n"
    with pytest.raises(errors.InvalidArgument):
        tool.view("/memories/alice/plan.md", [5, 9])


def test_str_replace_needs_exactly_one_occurrence(tool):
    tool.create("/memories/alice/n.md", "a b a\n")
    for old in ("a", "c", ""):
        with pytest.raises(errors.InvalidArgument):
            tool.str_replace("/memories/alice/n.md", old, "x")
    with pytest.raises(errors.InvalidArgument):
        tool.insert("/memories/alice/n.md", 3, "x")
    assert tool.files.read("memories/alice/n.md") == b"a b a\n"


def test_view_a_directory_delete_and_rename(tool):
    tool.create("/memories/alice/a.md", "aa\n")
    tool.create("/memories/alice/topic/b.md", "b\n")
    tool.create("/memories/alice/topic/deeper/c.md", "c\n")
    assert tool.view("/memories/alice") == "\n".join([
        "/memories/alice/ (up to 2 levels deep):",
        "       3\t/memories/alice/a.md",
        "       -\t/memories/alice/topic/",
        "       2\t/memories/alice/topic/b.md",
        "       -\t/memories/alice/topic/deeper/"])
    tool.rename("/memories/alice/topic", "/memories/alice/archive/topic")
    assert tool.files.list("memories/alice/archive/topic") == ["b.md", "deeper"]
    tool.delete("/memories/alice/archive")   # with everything in it
    assert tool.files.list("memories/alice") == ["a.md"]


def test_an_agent_uses_the_tool_with_its_own_rights(url, tool):
    tool.create("/memories/alice/secret.md", "mine\n")
    with Client(url, actor="bob") as client:
        bob = MemoryTool(client.files)
        with pytest.raises(errors.PermissionDenied):
            bob.view("/memories/alice/secret.md")
        assert bob.run({"command": "view", "path": "/memories/alice/secret.md"}).endswith("(EACCES)")
        assert bob.run({"command": "create", "path": "/agents/bob/state.json", "file_text": "{oops"}) \
            .endswith("(EINVAL)")
        assert bob.view("/memories") == "/memories/ (up to 2 levels deep):\n       -\t/memories/shared/"
        with pytest.raises(errors.LighthouseError) as err:
            bob.delete("/memories/shared")
        assert err.value.errno == errno.EPERM


def test_run_takes_a_tool_calls_input(tool):
    assert tool.run({"command": "create", "path": "/memories/shared/x.md", "file_text": "x\n"}).startswith("File")
    assert tool.run({"command": "str_replace", "path": "/memories/shared/x.md", "old_str": "x",
                     "new_str": "y"}) == "The file /memories/shared/x.md has been edited"
    assert tool.run({"command": "view", "path": "/memories/shared/x.md"}) == "     1\ty"
    assert tool.run({"command": "rename", "old_path": "/memories/shared/x.md",
                     "new_path": "/memories/shared/y.md"}) == "Renamed /memories/shared/x.md to /memories/shared/y.md"
    assert tool.run({"command": "delete", "path": "/memories/shared/y.md"}) == "Deleted /memories/shared/y.md"
    assert tool.run({"command": "view", "path": "/memories/shared/y.md"}).endswith("(ENOENT)")
    assert tool.run({"command": "insert", "path": "/x"}) == "Error: insert needs 'insert_line'"
    assert tool.run({"command": "dance"}) == "Error: unknown command 'dance'"


def test_a_root_confines_the_tools_paths(url):
    with Client(url, actor="alice") as client:
        tool = MemoryTool(client.files, root="memories/alice")
        tool.create("/notes.md", "n\n")
        assert client.files.read("memories/alice/notes.md") == b"n\n"
        assert tool.view("/") == "/ (up to 2 levels deep):\n       2\t/notes.md"
        with pytest.raises(errors.InvalidArgument):
            tool.view("/../bob")


def snapshot(url) -> dict:
    """Every path and its content, as the operator sees them."""
    with Client(url, actor="operator") as client:
        def walk(path: str, out: dict) -> dict:
            for name, st in client.files.list(path, stats=True):
                full = f"{path}/{name}" if path else name
                out[full] = walk(full, {}) if st.kind == "dir" else client.files.read(full)
            return out
        return walk("", {})


def test_a_refused_command_changes_nothing(url):
    """A command the tool answers with an error has stored nothing: a rename across areas
    makes no directory first, and a recursive delete of a directory the actor may not
    remove removes nothing inside it."""
    with Client(url, actor="alice") as client:
        alice = MemoryTool(client.files)
        alice.create("/memories/shared/s.md", "s\n")
        alice.create("/projects/demo/p.md", "p\n")
        alice.create("/memories/alice/a.md", "a\n")
    with Client(url, actor="bob") as client:
        bob = MemoryTool(client.files)
        bob.create("/memories/bob/x", "x\n")
        before = snapshot(url)
        for call, code in ((("rename", "/memories/bob/x", "/projects/newproj/sub/x"), errno.EXDEV),
                           (("rename", "/memories/bob/x", "/memories/shared/new/x"), errno.EXDEV),
                           (("rename", "/memories/bob", "/memories/bob/sub/bob"), errno.EPERM),
                           (("delete", "/memories"), errno.EPERM),
                           (("delete", "/projects"), errno.EPERM),
                           (("delete", "/agents"), errno.EPERM),
                           (("delete", "/memories/shared"), errno.EPERM),
                           (("delete", "/"), errno.EBUSY)):
            with pytest.raises(errors.LighthouseError) as err:
                getattr(bob, call[0])(*call[1:])
            assert err.value.errno == code, (call, err.value)
            assert snapshot(url) == before, call
        bob.rename("/memories/bob/x", "/memories/bob/sub/x")   # within bob's area: made
        assert client.files.read("memories/bob/sub/x") == b"x\n"
