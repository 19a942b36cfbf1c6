"""The rules of the namespace, for an acting agent: the fixed layout, the areas and who
may change them (privacy and ownership), the formats of agents/<agent>/state.json and
status (their checks are formats.py's), and (for the mount) read-only mounts and what an agent may see.

Pure functions of (tree, actor, ...): Tree.check runs them before an event is appended
and Tree.apply when it is applied, so every entry point and every node refuse alike.

Areas: `projects` (all of projects/), `memories/shared`, `memories/<agent>` (private to
that agent) and `agents/<agent>` (everyone reads, only the owner writes). A node never
changes area: a hard link or rename across areas is EXDEV, for everyone. An area is named
by its root directory's inode; a directory's area is found by walking up its parents, a
file's from the directory it is linked in (Node.parent, kept by the tree), so a right is
decided by where the node is now, never by the path that reached it.
"""
from __future__ import annotations

import re
import stat
from typing import TYPE_CHECKING, Callable

from .. import errors
from .events import INO_BASE, LINK, MKNOD, PATH_ERRORS, RENAME, TREE_TYPES, UNLINK, WRITE
# (The formats' checks are re-exported: the entry points ask the rules.)
from .formats import (MAX_STATE_BYTES, MAX_STATE_DEPTH, MAX_STATUS_BYTES, STATE_FILE, STATUS_FILE,  # noqa: F401
                      FormatCheck, check_format, check_format_size, format_of_path, validate_format)
from .layout import AGENTS_INO, MEMORIES_INO, PROJECTS_INO, ROOT_INO, SHARED_MEMORIES_INO
from .visibility import private_owner

if TYPE_CHECKING:
    from .events import Draft
    from .tree import Node, Tree

AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # fullmatch: `$` would pass "bob\n"
OPERATOR = "operator"   # the actor of a mount without --agent: unrestricted
# Directories whose entries are the layout itself, not an area's: the root, memories/
# and agents/ (their entries are the area roots).
LAYOUT_DIRS = (ROOT_INO, MEMORIES_INO, AGENTS_INO)
_TOP = {PROJECTS_INO: "projects", MEMORIES_INO: "memories", AGENTS_INO: "agents"}
# The Node.parent (and area) of a file linked in more than one area: only events from
# before the rules can make one (a hard link or rename across areas). Only the operator
# may change it; a replay and a snapshot both mark it (docs/decisions.md).
SEVERAL_AREAS = -1


def check_agent_name(agent: str) -> None:
    if not AGENT_NAME.fullmatch(agent) or agent in ("shared", OPERATOR):
        raise errors.InvalidArgument(
            f"agent id {agent!r}: use 1-64 letters, digits, '.', '_' or '-' (and not 'shared' or 'operator')")


def check_actor(actor: str) -> None:
    """An actor is the operator or an agent with a valid name (EINVAL otherwise)."""
    if actor != OPERATOR:
        check_agent_name(actor)


# ---- areas -------------------------------------------------------------------------------

def area_root(tree: Tree, directory: int) -> int | None:
    """The root of the area that the entries of `directory` belong to (an area root is in
    its own area); None at the layout level (the root, memories/, agents/)."""
    nodes = tree.nodes
    ino = directory
    while ino not in LAYOUT_DIRS:
        node = nodes.get(ino)
        if node is None or not node.is_dir:
            return None
        if node.parent in LAYOUT_DIRS:
            return ino
        ino = node.parent
    return None


def area_of(tree: Tree, node: Node) -> int | None:
    """The area `node` is in now: a directory's own, a file's that of the directory it
    is linked in (any of them: links never cross areas, but for SEVERAL_AREAS)."""
    if node.is_dir:
        return area_root(tree, node.ino)
    return SEVERAL_AREAS if node.parent == SEVERAL_AREAS else area_root(tree, node.parent)


def area_name(tree: Tree, root: int | None) -> str:
    if root == SEVERAL_AREAS:
        return "several areas"
    return "the layout" if root is None else ("projects" if root == PROJECTS_INO else tree.dir_path(root))


def _owner(tree: Tree, root: int) -> str | None:
    """The agent an area belongs to; None for a shared one (projects, memories/shared)."""
    if root in (PROJECTS_INO, SHARED_MEMORIES_INO):
        return None
    top = tree.nodes[root].parent
    name = next((n for n, i in tree.nodes[top].entries.items() if i == root), b"?")
    return name.decode("utf-8", PATH_ERRORS)


def check_change(tree: Tree, actor: str, root: int | None, what: Callable[[], str]) -> None:
    """May `actor` change what is in area `root`? EACCES for another agent's area, EPERM
    for the layout or a directory outside it. `what()` gives the path for the message,
    only when refused (finding a path scans directories: not on every event applied)."""
    if actor == OPERATOR:
        return
    if root is None:
        raise errors.NotPermitted(f"layout: {actor} may not change {what() or '/'}: it is part of the fixed layout")
    if root == SEVERAL_AREAS:
        raise errors.PermissionDenied(f"areas: {actor} may not change {what()}: it is linked in several areas "
                                      "(by links made before the rules): only the operator may")
    owner = _owner(tree, root)
    if owner is None or owner == actor:
        return
    top = tree.nodes[root].parent
    if top == MEMORIES_INO:
        raise errors.PermissionDenied(f"privacy: {actor} may not write {what()}: memories/{owner} is private "
                                      f"to {owner}")
    if top == AGENTS_INO:
        raise errors.PermissionDenied(f"ownership: {actor} may not change {what()}: agents/{owner} belongs "
                                      f"to {owner}")
    raise errors.NotPermitted(f"layout: {actor} may not change {what()}: it is outside the fixed layout")


def check_node_change(tree: Tree, actor: str, node: Node) -> None:
    """May `actor` change this node's content or attributes? Decided by its area now."""
    if actor != OPERATOR:
        _check_not_layout(tree, actor, node)
        check_change(tree, actor, area_of(tree, node), lambda: _node_path(tree, node))


def _check_not_layout(tree: Tree, actor: str, node: Node) -> None:
    """The layout's directories (/, projects, memories, memories/shared, agents) are
    no agent's to chmod, chown, touch or tag: EPERM, as for the rest of the fixed layout.
    (projects and memories/shared are area roots of shared areas, so their area alone
    would let anyone.) The operator may: its rights are unrestricted but for names."""
    if node.ino < INO_BASE:
        raise errors.NotPermitted(f"layout: {actor} may not change {tree.dir_path(node.ino) or '/'}: "
                                  "it is part of the fixed layout")


def _node_path(tree: Tree, node: Node) -> str:
    if node.is_dir:
        return tree.dir_path(node.ino)
    directory = tree.nodes.get(node.parent)
    name = None if directory is None else next((n for n, i in directory.entries.items() if i == node.ino), None)
    return f"inode {node.ino}" if name is None else tree.path(node.parent, name)


# ---- events ------------------------------------------------------------------------------

def check_event(tree: Tree, actor: str, type_: str, p: dict, path: str) -> None:
    """Raise the refusal the rules give `actor` for this event: the layout (EPERM),
    privacy and ownership (EACCES), areas (EXDEV), the kind of a state.json or status
    (EINVAL) and its size. What the tree itself checks (names, existence, emptiness) is
    left to it; where a node or directory is missing, the tree reports it."""
    if type_ not in TREE_TYPES:
        check_annotation(actor, path)
    elif type_ == MKNOD:
        _check_entry(tree, actor, p["parent"], p["name"], p["mode"])
        kind = format_of(tree, p["parent"], p["name"])
        if kind is not None and "size" in p:
            check_format_size(kind, p["size"])
    elif type_ == LINK:
        node = tree.nodes.get(p["ino"])
        if node is not None:
            _check_entry(tree, actor, p["parent"], p["name"], node.mode)
            _check_same_area(tree, node, p["parent"], p["name"], "a hard link")
    elif type_ == UNLINK:
        _check_remove(tree, actor, p["parent"], p["name"])
    elif type_ == RENAME:
        _check_rename(tree, actor, p)
    else:   # SETATTR, WRITE, SETXATTR, REMOVEXATTR: a change of one node
        node = tree.nodes.get(p["ino"])
        if node is None:
            return
        root = area_of(tree, node)
        if actor != OPERATOR:
            _check_not_layout(tree, actor, node)
            check_change(tree, actor, root, lambda: _node_path(tree, node))
        if type_ == WRITE and root == SEVERAL_AREAS:
            check_format_size(format_of_inode(tree, node.ino), p["size"])
        elif type_ == WRITE and root is not None and tree.nodes[root].parent == AGENTS_INO:
            # (Its names are all in its area: only this agent's directory can name it
            # state.json or status. Cheaper than format_of_inode, on every write applied.)
            entries = tree.nodes[root].entries
            kind = next((k for k in (STATE_FILE, STATUS_FILE) if entries.get(k) == node.ino), None)
            check_format_size(kind, p["size"])


def check_annotation(actor: str, path: str) -> None:
    """An annotation (`lighthouse emit`, the API's append) may not name another agent's
    private memories: its path would show in every reader's events."""
    # The readers' one rule (normalized: `memories//alice`, `projects/../memories/alice`
    # and `memories/./alice` all name alice's memories, and show only to her).
    owner = private_owner(path) if actor != OPERATOR else None
    if owner is not None and owner != actor:
        raise errors.PermissionDenied(f"privacy: {actor} may not name {path}: memories/{owner} is private "
                                      f"to {owner}")


def _check_entry(tree: Tree, actor: str, parent: int, name: bytes, mode: int) -> None:
    """May `actor` make a node of `mode` named parent/name (by mknod, link or rename)?"""
    directory = tree.nodes.get(parent)
    if directory is None or not directory.is_dir:
        return
    is_dir = stat.S_ISDIR(mode)
    if parent == ROOT_INO:
        raise errors.NotPermitted("layout: the top level is fixed: projects, memories, agents, events, .lighthouse")
    if parent in _TOP:
        where = _TOP[parent]
        if not is_dir:
            raise errors.NotPermitted(f"layout: {where}/ holds only directories")
        if parent != PROJECTS_INO:
            check_agent_name(name.decode("utf-8", PATH_ERRORS))
            if actor != OPERATOR and name != actor.encode():
                raise errors.PermissionDenied(f"ownership: {actor} may only create its own {where}/{actor}, "
                                              f"not {where}/{name.decode('utf-8', PATH_ERRORS)}")
            return
    check_change(tree, actor, area_root(tree, parent), lambda: tree.path(parent, name))
    if name == b".history" and is_project(tree, parent):
        raise errors.Exists("a project's .history is reserved")
    kind = format_of(tree, parent, name)
    if kind is not None and not stat.S_ISREG(mode):
        raise errors.InvalidArgument(f"format: {kind.decode()} must be a regular file")


def _check_remove(tree: Tree, actor: str, parent: int, name: bytes) -> None:
    directory = tree.nodes.get(parent)
    if directory is None or not directory.is_dir:
        return
    if parent not in LAYOUT_DIRS:
        check_change(tree, actor, area_root(tree, parent), lambda: tree.path(parent, name))
    elif parent == ROOT_INO or (parent == MEMORIES_INO and name == b"shared"):
        raise errors.NotPermitted(f"layout: {tree.path(parent, name)} is part of the fixed layout")
    elif actor != OPERATOR and name != actor.encode():   # another agent's area root
        rule = "privacy" if parent == MEMORIES_INO else "ownership"
        raise errors.PermissionDenied(f"{rule}: {actor} may not remove {tree.path(parent, name)}: "
                                      f"it belongs to {name.decode('utf-8', PATH_ERRORS)}")


def _check_rename(tree: Tree, actor: str, p: dict) -> None:
    ends = ((p["parent"], p["name"]), (p["new_parent"], p["new_name"]))
    for parent, name in ends:
        if parent in LAYOUT_DIRS:
            if parent != ROOT_INO and not (parent == MEMORIES_INO and name == b"shared"):
                if actor != OPERATOR and name != actor.encode():
                    rule = "privacy" if parent == MEMORIES_INO else "ownership"
                    raise errors.PermissionDenied(f"{rule}: {actor} may not rename {tree.path(parent, name)}: "
                                                  f"it belongs to {name.decode('utf-8', PATH_ERRORS)}")
            raise errors.NotPermitted(f"layout: {tree.path(parent, name)}: the top level and the area roots "
                                      "are never renamed")
    for parent, name in ends:
        if parent in tree.nodes and tree.nodes[parent].is_dir:
            check_change(tree, actor, area_root(tree, parent), lambda: tree.path(parent, name))
    (old_parent, old_name), (new_parent, new_name) = ends
    directory = tree.nodes.get(old_parent)
    node = None if directory is None or not directory.is_dir else tree.nodes.get(directory.entries.get(old_name))
    if node is None or new_parent not in tree.nodes:
        return
    _check_same_area(tree, node, new_parent, new_name, "a rename")
    for (parent, name), moved in (((new_parent, new_name), node),
                                  ((old_parent, old_name), tree.find(new_parent, new_name) if p.get("exchange")
                                   else None)):
        if moved is not None:
            if name == b".history" and is_project(tree, parent):
                raise errors.Exists("a project's .history is reserved")
            kind = format_of(tree, parent, name)
            if kind is not None and not stat.S_ISREG(moved.mode):
                raise errors.InvalidArgument(f"format: {kind.decode()} must be a regular file")


def _check_same_area(tree: Tree, node: Node, parent: int, name: bytes, what: str) -> None:
    """A node never changes area (for everyone): EXDEV, so `mv` copies and deletes."""
    here, there = area_of(tree, node), area_root(tree, parent)
    if here != there:
        raise errors.CrossDevice(f"areas: {what} may not take {_node_path(tree, node)} from {area_name(tree, here)} "
                                 f"to {area_name(tree, there)} ({tree.path(parent, name)})")


def check_content(tree: Tree, draft: Draft, data: bytes) -> None:
    """The content a MKNOD or WRITE draft stores must fit the format of the file it makes
    or changes (EINVAL, or EFBIG for a state.json past its bound). The tree cannot check
    this (an event holds the content's hashes, not its bytes): every entry point that
    has the bytes calls this before it appends (docs/decisions.md)."""
    p = draft.payload
    if draft.type == MKNOD:
        kind = format_of(tree, p["parent"], p["name"])
    elif draft.type == WRITE:
        kind = format_of_inode(tree, p["ino"])
    else:
        return
    check_format(kind, data, draft.path)


# ---- kinds of files --------------------------------------------------------------------------

def is_project(tree: Tree, directory: int) -> bool:
    node = tree.nodes.get(directory)
    return node is not None and node.is_dir and node.parent == PROJECTS_INO and directory != PROJECTS_INO


def format_of(tree: Tree, parent: int, name: bytes) -> bytes | None:
    """STATE_FILE or STATUS_FILE when parent/name is agents/<agent>/state.json or status."""
    node = tree.nodes.get(parent)
    if node is not None and node.is_dir and node.parent == AGENTS_INO and parent != AGENTS_INO:
        if name in (STATE_FILE, STATUS_FILE):
            return name
    return None


def format_of_inode(tree: Tree, ino: int) -> bytes | None:
    """The format a file must keep, from any of the names it is linked under."""
    for agent_ino in tree.nodes[AGENTS_INO].entries.values():
        entries = tree.nodes[agent_ino].entries or {}
        for name in (STATE_FILE, STATUS_FILE):
            if entries.get(name) == ino:
                return name
    return None


class Policy:
    """What one mount may see, and whether it may write at all (--read-only)."""

    def __init__(self, tree: Tree, agent: str | None, read_only: bool):
        self.tree = tree
        self.agent = agent.encode() if agent else None
        self.read_only = read_only

    # ---- reading -----------------------------------------------------------------------

    def can_see(self, parent: int, name: bytes) -> bool:
        """False for another agent's memories, when this mount acts as an agent."""
        return not (parent == MEMORIES_INO and self.agent is not None
                    and name not in (b"shared", self.agent))

    def visible_entries(self, parent: int, entries: dict[bytes, int]) -> list[tuple[bytes, int]]:
        """A directory's (name, inode) pairs this mount may list."""
        if parent != MEMORIES_INO or self.agent is None:
            return list(entries.items())   # the common case: nothing hidden, no test per name
        return [(name, ino) for name, ino in entries.items() if self.can_see(parent, name)]

    def check_see(self, parent: int, name: bytes) -> None:
        if not self.can_see(parent, name):
            owner = name.decode("utf-8", PATH_ERRORS)
            raise errors.PermissionDenied(f"privacy: memories/{owner} is private to {owner}")

    # ---- writing: the mount's own rule (the rest are the domain's, above) ------------------

    def check_mount_writable(self) -> None:
        if self.read_only:
            raise errors.ReadOnly("this mount is read-only")

    def is_project(self, directory: int) -> bool:
        return is_project(self.tree, directory)

    # ---- formats -----------------------------------------------------------------------

    def format_of(self, parent: int, name: bytes) -> bytes | None:
        return format_of(self.tree, parent, name)

    def format_of_inode(self, ino: int) -> bytes | None:
        return format_of_inode(self.tree, ino)
