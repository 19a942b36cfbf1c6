"""The fixed layout of the namespace: its top-level names, their inodes, and the stream
(scope) each path's events go to. Pure: every layer may import it."""
from __future__ import annotations

ROOT_INO = 1
PROJECTS_INO = 2
MEMORIES_INO = 3
SHARED_MEMORIES_INO = 4
AGENTS_INO = 5


def scope_of(path: str) -> str:
    """The stream a path belongs to: `projects/<name>`, `memories`, `agents` or ``."""
    parts = path.split("/", 2)
    if parts[0] == "projects" and len(parts) > 1:
        return "/".join(parts[:2])
    return parts[0] if parts[0] in ("memories", "agents") else ""
