"""view_of: what a viewer may see of an event (pure)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lighthousefs.domain import events
from lighthousefs.domain.events import Event
from lighthousefs.domain.layout import MEMORIES_INO, PROJECTS_INO
from lighthousefs.domain.visibility import can_see_path, private_owner, view_of

ALICE_DIR = 2001   # the inode of memories/alice in these events
PROJECT = 2002     # projects/p


def event(type_: str, path: str, **payload) -> Event:
    return Event(7, 1_000_000_000, "alice", type_, path, payload)


def rename(src: str, dst: str | None, src_parent=PROJECT, dst_parent=ALICE_DIR, **extra) -> Event:
    payload = {"parent": src_parent, "name": src.rsplit("/", 1)[1].encode(),
               "new_parent": dst_parent, "new_name": (dst or "x/y").rsplit("/", 1)[1].encode(), **extra}
    if dst is not None:
        payload["to"] = dst
    return event(events.RENAME, src, **payload)


@pytest.mark.parametrize("path, owner", [
    ("memories/alice/plan.md", "alice"), ("memories/alice", "alice"), ("/memories//alice/x", "alice"),
    ("projects/../memories/alice/x", "alice"), ("./memories/alice", "alice"),
    ("memories/shared/x", None), ("memories", None), ("memories/", None), ("projects/p/memories/alice", None),
    ("agents/alice/status", None), ("", None), ("events", None),
])
def test_private_owner(path, owner):
    assert private_owner(path) == owner


def test_operator_sees_everything_as_it_is():
    e = rename("projects/p/f", "memories/alice/f")
    assert view_of(e, None) is e and view_of(e, "operator") is e
    private = event(events.MKNOD, "memories/alice/f", parent=ALICE_DIR, name=b"f")
    assert view_of(private, None) is private


@pytest.mark.parametrize("type_", [events.MKNOD, events.UNLINK, events.WRITE, events.SETATTR, events.LINK,
                                   events.SETXATTR, "note", "task.started"])
def test_private_paths_are_hidden_from_others_only(type_):
    e = event(type_, "memories/alice/plan.md", ino=3000)
    assert view_of(e, "bob") is None
    assert view_of(e, "alice") is e
    shared = event(type_, "memories/shared/plan.md", ino=3000)
    assert view_of(shared, "bob") is shared


def test_an_annotation_cannot_slip_a_private_path_past_by_spelling_it_oddly():
    for path in ("/memories/alice/x", "memories//alice/x", "projects/../memories/alice/x"):
        assert view_of(event("note", path), "bob") is None
    assert not can_see_path(123, "bob")   # not a path at all: an agent is shown nothing


def test_rename_into_private_memories_is_a_delete_on_the_shared_side():
    e = rename("projects/p/f", "memories/alice/secret-name")
    seen = view_of(e, "bob")
    assert (seen.type, seen.path, seen.payload) == (events.UNLINK, "projects/p/f", {"parent": PROJECT, "name": b"f"})
    assert (seen.seq, seen.actor, seen.time_ns) == (e.seq, e.actor, e.time_ns)
    assert b"secret-name" not in seen.to_json_line()
    assert view_of(e, "alice") is e


def test_rename_out_of_private_memories_is_a_create_on_the_shared_side():
    e = rename("memories/alice/secret-name", "projects/p/f", src_parent=ALICE_DIR, dst_parent=PROJECT)
    seen = view_of(e, "bob")
    assert (seen.type, seen.path, seen.payload) == (events.MKNOD, "projects/p/f", {"parent": PROJECT, "name": b"f"})
    assert b"secret-name" not in seen.to_json_line()


def test_rename_exchange_across_areas_shows_a_new_node_at_the_shared_name():
    e = rename("projects/p/f", "memories/alice/g", exchange=True)
    seen = view_of(e, "bob")
    assert (seen.type, seen.path, seen.payload) == (events.MKNOD, "projects/p/f", {"parent": PROJECT, "name": b"f"})
    e = rename("memories/alice/g", "projects/p/f", src_parent=ALICE_DIR, dst_parent=PROJECT, exchange=True)
    seen = view_of(e, "bob")
    assert (seen.type, seen.path) == (events.MKNOD, "projects/p/f")


def test_renames_within_one_side_are_whole_or_hidden():
    inside = rename("memories/alice/a", "memories/alice/b", src_parent=ALICE_DIR)
    assert view_of(inside, "bob") is None and view_of(inside, "alice") is inside
    shared = rename("projects/p/a", "memories/shared/b", dst_parent=MEMORIES_INO)
    assert view_of(shared, "bob") is shared
    own = rename("projects/p/a", "memories/bob/b")
    assert view_of(own, "bob") is own
    # To another agent's memories from bob's own: a delete there, for carol a create nowhere.
    across = rename("memories/bob/a", "memories/alice/b", src_parent=ALICE_DIR + 1)
    assert view_of(across, "bob").type == events.UNLINK
    assert view_of(across, "alice").type == events.MKNOD
    assert view_of(across, "carol") is None


def test_a_rename_without_its_destination_shows_only_its_source():
    e = rename("projects/p/f", None, dst_parent=PROJECTS_INO)
    assert view_of(e, "bob").type == events.UNLINK


PATHS = st.sampled_from(["projects/p/a", "projects/q/b", "memories/shared/c", "memories/alice/d",
                         "memories/bob/e", "memories/alice", "agents/alice/status", "memories/carol/f/g"])


@given(PATHS, PATHS, st.sampled_from(["alice", "bob", "carol", "dave"]), st.booleans())
def test_a_viewer_never_sees_a_private_name_of_another(src, dst, viewer, exchange):
    e = rename(src, dst, exchange=exchange) if exchange else rename(src, dst)
    seen = view_of(e, viewer)
    if seen is None:
        return
    line = seen.to_json_line().decode()
    for other in ("alice", "bob", "carol"):
        if other != viewer:
            assert f"memories/{other}" not in line


def test_a_path_that_names_no_area_is_shown_to_the_operator_only():
    """An `inode/N` path (logged for an unlinked file before that stopped) cannot be
    scoped: no agent sees it, whoever owned the file."""
    for viewer in ("alice", "bob"):
        assert not can_see_path("inode/1234", viewer)
        assert not can_see_path("/inode/1234", viewer)
    assert can_see_path("inode/1234", None) and can_see_path("inode/1234", "operator")
