"""What each top-level directory allows: the layout, agents' privacy, read-only mounts,
and the formats of agents/<agent>/state.json and status.

Decisions take the parent directory and the name, since a file's meaning comes from
where it is linked.
"""
from __future__ import annotations

import re

from .. import errors
from .jsonprefix import JsonPrefix, check_document
from .layout import AGENTS_INO, MEMORIES_INO, PROJECTS_INO, ROOT_INO, SHARED_MEMORIES_INO
from .tree import Tree

AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # fullmatch: `$` would pass "bob\n"
STATE_FILE = b"state.json"
STATUS_FILE = b"status"
MAX_STATUS_BYTES = 4096
MAX_STATE_DEPTH = 64   # levels of objects and arrays in a state.json
# A state.json is read whole to be checked (at a write that is not an append, at close,
# at a rename onto it): bounded, so no agent can make the daemon read a terabyte hole.
MAX_STATE_BYTES = 1 << 20


def check_agent_name(agent: str) -> None:
    if not AGENT_NAME.fullmatch(agent) or agent == "shared":
        raise errors.InvalidArgument(
            f"agent id {agent!r}: use 1-64 letters, digits, '.', '_' or '-' (and not 'shared')")


class Policy:
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
            raise errors.PermissionDenied(f"memories/{name.decode(errors='replace')} belongs to another agent")

    # ---- writing -----------------------------------------------------------------------

    def check_writable(self, directory: int | None) -> None:
        """May entries be added to, removed from, or changed below `directory`?"""
        if self.read_only:
            raise errors.ReadOnly("this mount is read-only")
        if self.agent is None or directory is None:
            return
        top, owner = self._zone(directory)
        if top == AGENTS_INO and owner is not None and owner != self.agent:
            raise errors.PermissionDenied(f"agents/{owner.decode(errors='replace')} belongs to another agent")
        if top == MEMORIES_INO and owner is not None and owner not in (self.agent, b"shared"):
            raise errors.PermissionDenied(f"memories/{owner.decode(errors='replace')} belongs to another agent")

    def check_entry(self, parent: int, name: bytes, is_dir: bool) -> None:
        """May an entry named `name` be created in (or moved into) `parent`?"""
        self.check_writable(parent)
        if parent == ROOT_INO:
            raise errors.NotPermitted("the top level is fixed: projects, memories, agents, events, .lighthouse")
        if parent in (PROJECTS_INO, MEMORIES_INO, AGENTS_INO):
            where = {PROJECTS_INO: "projects", MEMORIES_INO: "memories", AGENTS_INO: "agents"}[parent]
            if not is_dir:
                raise errors.NotPermitted(f"{where}/ holds only directories")
            if parent != PROJECTS_INO:
                check_agent_name(name.decode(errors="replace"))
                if self.agent is not None and name != self.agent:
                    raise errors.PermissionDenied(f"an agent may only create its own {where}/ directory")
        if name == b".history" and self.is_project(parent):
            raise errors.Exists("a project's .history is reserved")

    def check_remove(self, parent: int, name: bytes) -> None:
        self.check_writable(parent)
        if parent == ROOT_INO or (parent == MEMORIES_INO and name == b"shared"):
            raise errors.NotPermitted("the top level is fixed")

    def _zone(self, directory: int) -> tuple[int, bytes | None]:
        """(top-level directory inode, name of the entry below it) that contain `directory`."""
        nodes = self.tree.nodes
        child = None
        ino = directory
        while ino not in (ROOT_INO, PROJECTS_INO, MEMORIES_INO, AGENTS_INO):
            node = nodes.get(ino)
            if node is None or not node.is_dir:
                return ROOT_INO, None
            child, ino = ino, node.parent
        if child is None:
            return ino, None
        if child == SHARED_MEMORIES_INO:
            return ino, b"shared"
        entries = nodes[ino].entries
        return ino, next((name for name, i in entries.items() if i == child), None)

    def is_project(self, directory: int) -> bool:
        node = self.tree.nodes.get(directory)
        return node is not None and node.is_dir and node.parent == PROJECTS_INO and directory != PROJECTS_INO

    # ---- formats -----------------------------------------------------------------------

    def format_of(self, parent: int, name: bytes) -> bytes | None:
        """STATE_FILE or STATUS_FILE when parent/name is agents/<agent>/state.json or status."""
        node = self.tree.nodes.get(parent)
        if node is not None and node.is_dir and node.parent == AGENTS_INO and parent != AGENTS_INO:
            if name in (STATE_FILE, STATUS_FILE):
                return name
        return None

    def format_of_inode(self, ino: int) -> bytes | None:
        """The format a file must keep, from any of the names it is linked under."""
        for agent_ino in self.tree.nodes[AGENTS_INO].entries.values():
            entries = self.tree.nodes[agent_ino].entries or {}
            for name in (STATE_FILE, STATUS_FILE):
                if entries.get(name) == ino:
                    return name
        return None


def check_format_size(kind: bytes | None, size: int) -> None:
    """Refuse a state.json (EFBIG) or status (EINVAL) larger than its kind allows, before
    any of it is read."""
    if kind == STATE_FILE and size > MAX_STATE_BYTES:
        raise errors.FileTooLarge(f"state.json is at most {MAX_STATE_BYTES} bytes, not {size}")
    if kind == STATUS_FILE and size > MAX_STATUS_BYTES:
        raise errors.InvalidArgument(f"status must be one line of at most {MAX_STATUS_BYTES} bytes")


def validate_format(kind: bytes | None, data: bytes) -> None:
    """EINVAL unless `data` is valid for the file kind: state.json holds one JSON object
    (UTF-8, no NaN or Infinity, at most MAX_STATE_DEPTH levels deep); status is one line
    (then only newlines) of at most MAX_STATUS_BYTES."""
    if kind == STATE_FILE:
        try:
            check_document(data, MAX_STATE_DEPTH)
        except ValueError as exc:
            raise errors.InvalidArgument(f"state.json must hold a JSON object: {exc}") from None
    elif kind == STATUS_FILE:
        FormatCheck(kind).feed(data)


class FormatCheck:
    """The incremental sibling of validate_format: fed a file's bytes in order from its
    start, it refuses (EINVAL) as soon as they cannot begin a valid file of the kind, so
    that write() can refuse them, where a shell sees it. `fed` counts the bytes fed.
    What it accepts may still be unfinished: validate_format checks the whole at close."""

    def __init__(self, kind: bytes):
        self.kind = kind
        self.fed = 0
        self._json = JsonPrefix(MAX_STATE_DEPTH) if kind == STATE_FILE else None
        self._line_ended = False   # status: a newline came, so only newlines may follow

    def feed(self, data: bytes) -> None:
        self.fed += len(data)
        if self._json is not None:
            try:
                self._json.feed(data)
            except ValueError as exc:
                raise errors.InvalidArgument(f"state.json must hold a JSON object: {exc}") from None
            return
        end = 0 if self._line_ended else data.find(b"\n")
        if end >= 0:
            self._line_ended = True
        if self.fed > MAX_STATUS_BYTES or (end >= 0 and data[end:].strip(b"\n")):
            raise errors.InvalidArgument(f"status must be one line of at most {MAX_STATUS_BYTES} bytes")
