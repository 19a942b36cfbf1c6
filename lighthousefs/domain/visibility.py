"""What a viewer may see of an event: the one rule every reader of the log obeys (the
`events` file, `.history`, `lighthouse log --agent`, the API's read and follow).

memories/<agent> is private to that agent; everything else is readable by all. The
operator (viewer None or "operator") sees every event as it is. Pure: no I/O.

An event is scoped by the paths it names: `path`, and for a rename its destination
`to`. A rename with one side private shows only its shared side, as the create or
delete a copy-and-delete would show there; a link is scoped by its new name (`path`),
the only name it carries (its source is an inode number, which names nothing).
"""
from __future__ import annotations

import dataclasses
import posixpath

from . import events
from .events import Event

OPERATOR = "operator"


def private_owner(path: str) -> str | None:
    """The agent whose private memories hold `path` (None: readable by all). A path
    is normalized first, so an annotation's `/memories//alice/../alice/x` counts too."""
    if "memories" not in path:
        return None   # the common case, without normalizing
    parts = posixpath.normpath("/" + path).lstrip("/").split("/")
    if len(parts) >= 2 and parts[0] == "memories" and parts[1] not in ("shared", ""):
        return parts[1]
    return None


def can_see_path(path: str, viewer: str | None) -> bool:
    if viewer is None or viewer == OPERATOR:
        return True
    if not isinstance(path, str):
        return False   # not a path any producer writes: nothing to judge it by
    if path.lstrip("/").startswith("inode/"):
        # An inode number names no area (an unlinked file's change, as logged before
        # Tree.change_unlinked): no agent sees it, whoever owned the file.
        return False
    owner = private_owner(path)
    return owner is None or owner == viewer


def view_of(event: Event, viewer: str | None) -> Event | None:
    """`event` as `viewer` may see it: unchanged, transformed, or None (hidden)."""
    if viewer is None or viewer == OPERATOR:
        return event
    source = can_see_path(event.path, viewer)
    if event.type != events.RENAME:
        return event if source else None
    to = event.payload.get("to")
    # Every producer writes `to`; one without it is taken as going somewhere private.
    destination = isinstance(to, str) and can_see_path(to, viewer)
    if source and destination:
        return event
    if not source and not destination:
        return None
    p = event.payload
    if destination:   # private -> shared: a node appears at the destination
        return dataclasses.replace(event, type=events.MKNOD, path=to,
                                   payload={"parent": p.get("new_parent"), "name": p.get("new_name")})
    if p.get("exchange"):   # shared <-> private: another node now sits at the shared name
        return dataclasses.replace(event, type=events.MKNOD,
                                   payload={"parent": p.get("parent"), "name": p.get("name")})
    return dataclasses.replace(event, type=events.UNLINK,   # shared -> private: it is gone
                               payload={"parent": p.get("parent"), "name": p.get("name")})
