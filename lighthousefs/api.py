"""A Python API for producers that are not on a mount: append events, read them back,
and work with files by path (`client.files`: api_files.py), as the actor's mount would.

    with Client("sqlite:///var/lib/lighthouse.db", actor="planner") as client:
        client.append("task.started", "projects/demo", {"task": 42})
        client.files.write("projects/demo/result.md", b"done\\n")
        print(client.files.list("projects/demo"), client.files.read("projects/demo/result.md"))
        for event in client.read(after_seq=0):
            print(event.to_json_line())

Blocking calls; every mount that shares the store sees these events within
milliseconds (it is woken by the store).

The client acts as its actor: an agent's rights (domain/rules.py) bind it as they bind
a mount with --agent; the actor "operator" is unrestricted. A refusal raises the
domain error (its errno: EACCES, EPERM, EXDEV, EINVAL...) before anything is stored,
and is logged in one line.
"""
from __future__ import annotations

from typing import Any, Iterator

from . import errors
from .api_files import Files, logged_refusal
from .domain import events, rules
from .domain.events import Draft, Event
from .domain.tree import Node, Tree
from .domain.visibility import view_of
from .store import Store, default_url, open_store


class Client:
    def __init__(self, store_url: str | None = None, actor: str = "api", create: bool = True):
        """`create=False` for a reader: a store that does not exist is an error, not made.
        `actor`: "operator" or an agent's name (EINVAL otherwise)."""
        rules.check_actor(actor)
        self.store: Store = open_store(store_url or default_url(), create=create)
        self.actor = actor
        self.files = Files(self.store, actor)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # ---- events ----------------------------------------------------------------------

    def append(self, type_: str, path: str = "", data: dict[str, Any] | None = None) -> Event:
        """Append one annotation event (a type the filesystem does not interpret)."""
        return self.append_many([(type_, path, data)])[0]

    def append_many(self, items: list[tuple[str, str, dict[str, Any] | None]]) -> list[Event]:
        """Append annotation events in one durable batch."""
        drafts = []
        for type_, path, data in items:
            if not type_ or type_ in events.TREE_TYPES:
                raise errors.InvalidArgument(f"event type {type_!r} is reserved or empty; "
                                             "change files with write_file or through a mount")
            with logged_refusal(self.actor):
                rules.check_annotation(self.actor, path)   # (what Tree.check would say, without a tree)
            drafts.append(Draft(type_, path, dict(data or {}), self.actor))
        return self.store.append(drafts, {})

    # Reading shows the events as this client's actor may see them (visibility.py): an
    # agent never sees another agent's private memories; the operator sees everything.

    def _seen(self, batch: list[Event]) -> list[Event]:
        return [seen for event in batch if (seen := view_of(event, self.actor)) is not None]

    def read(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` events after `after_seq` (fewer only at the end of the log)."""
        found: list[Event] = []
        while len(found) < limit:
            batch = self.store.read(after_seq, limit)
            found += self._seen(batch)
            if len(batch) < limit:
                break
            after_seq = batch[-1].seq
        return found[:limit]

    def read_all(self, after_seq: int = 0) -> Iterator[Event]:
        while batch := self.store.read(after_seq, 1000):
            yield from self._seen(batch)
            after_seq = batch[-1].seq

    def follow(self, after_seq: int = 0) -> Iterator[Event]:
        """Every event after `after_seq`, waiting for new ones forever (woken by the
        store: Redis's XREAD BLOCK, inotify on SQLite's log)."""
        while True:
            batch = self.store.wait_and_read(after_seq, 1.0, 1000)
            yield from self._seen(batch)
            if batch:
                after_seq = batch[-1].seq

    # ---- files (api_files.py) ------------------------------------------------------------

    def tree(self) -> Tree:
        """The current namespace (loaded once, then brought up to date)."""
        return self.files.tree()

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> Event:
        """Create or replace the file at `path`, its parents made where missing: one event."""
        return self.files.write(path, data, parents=True, mode=mode)

    def mkdirs(self, path: str) -> Node:
        """The directory at `path`, created with its parents where missing."""
        return self.files.mkdirs(path)

    def read_file(self, path: str) -> bytes:
        return self.files.read(path)
