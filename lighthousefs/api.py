"""A Python API for producers that are not on a mount: append events, read them back,
and write or read whole files by path.

    with Client("sqlite:///var/lib/lighthouse.db", actor="planner") as client:
        client.append("task.started", "projects/demo", {"task": 42})
        client.write_file("projects/demo/result.md", b"done\\n")
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

import contextlib
import errno
import logging
import stat
from typing import Any, Iterator

from . import errors
from .domain import chunks, events, rules
from .domain.events import Draft, Event
from .domain.tree import Tree
from .domain.visibility import view_of
from .engine.projection import load_tree, replay
from .store import Store, default_url, open_store

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _logged_refusal(actor: str):
    """One log line for a refusal, naming its errno and its rule (in the message)."""
    try:
        yield
    except errors.LighthouseError as exc:
        if not isinstance(exc, errors.StoreUnavailable):
            log.info("%s refused (%s): %s", actor, errno.errorcode.get(exc.errno, exc.errno), exc)
        raise


class Client:
    def __init__(self, store_url: str | None = None, actor: str = "api", create: bool = True):
        """`create=False` for a reader: a store that does not exist is an error, not made.
        `actor`: "operator" or an agent's name (EINVAL otherwise)."""
        rules.check_actor(actor)
        self.store: Store = open_store(store_url or default_url(), create=create)
        self.actor = actor
        self._tree: Tree | None = None

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
            with _logged_refusal(self.actor):
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

    # ---- files -------------------------------------------------------------------------

    def tree(self) -> Tree:
        """The current namespace (loaded once, then brought up to date)."""
        if self._tree is None:
            self._tree = load_tree(self.store)
        else:
            replay(self.store, self._tree, float("inf"))
        return self._tree

    def _submit(self, tree: Tree, draft: Draft, chunks: dict[bytes, bytes] | None = None,
                data: bytes | None = None) -> Event:
        """Check `draft` (and the content `data` it stores) against `tree` (brought up to
        date by the caller), append it, and apply it: the tree reads the log again only
        if another producer appended before it."""
        with _logged_refusal(self.actor):
            tree.check(draft)
            if data is not None:
                rules.check_content(tree, draft, data)
        [event] = self.store.append([draft], chunks or {})
        replay(self.store, tree, event.seq - 1)
        if tree.apply(event) is None:
            raise errors.Exists(f"{draft.path}: changed by another producer at the same time")
        return event

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> Event:
        """Create or replace the file at `path` (parents are created): one event."""
        parts = [p for p in path.strip("/").split("/") if p]
        if len(parts) < 2:
            raise errors.InvalidArgument(f"{path}: not a file path below a top-level directory")
        with _logged_refusal(self.actor):   # by the path first: before a directory on the way is made
            rules.check_format(rules.format_of_path(path), data, path)
        tree = self.tree()   # once per call: the helpers below share it
        parent = self._mkdirs(tree, "/".join(parts[:-1]))
        name = parts[-1].encode("utf-8", events.PATH_ERRORS)
        hashes, new_chunks = chunks.split(data)
        existing = tree.find(parent.ino, name)
        if existing is None:
            return self._submit(tree, Draft(events.MKNOD, "/".join(parts), {
                "parent": parent.ino, "name": name, "mode": stat.S_IFREG | mode,
                "size": len(data), "chunks": hashes}, self.actor), new_chunks, data)
        return self._submit(tree, Draft(events.WRITE, "/".join(parts), {
            "ino": existing.ino, "size": len(data), "chunks": hashes}, self.actor), new_chunks, data)

    def mkdirs(self, path: str):
        """The directory at `path`, created with its parents where missing."""
        return self._mkdirs(self.tree(), path)

    def _mkdirs(self, tree: Tree, path: str):
        node = tree.resolve("")
        walked = []
        for part in [p for p in path.strip("/").split("/") if p]:
            walked.append(part)
            child = tree.find(node.ino, part.encode("utf-8", events.PATH_ERRORS))
            if child is None:
                event = self._submit(tree, Draft(events.MKNOD, "/".join(walked), {
                    "parent": node.ino, "name": part.encode("utf-8", events.PATH_ERRORS),
                    "mode": stat.S_IFDIR | 0o755}, self.actor))
                child = tree.get(events.ino_for_seq(event.seq))
            elif not child.is_dir:
                raise errors.NotADirectory(f"{'/'.join(walked)} is not a directory")
            node = child
        return node

    def read_file(self, path: str) -> bytes:
        node = self.tree().resolve(path)
        if not stat.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{path} is not a regular file")
        refs = chunks.refs_of(chunks.unpack(node.chunks), node.size)   # holes are absent
        digests = [h for ref in refs.values() for h in chunks.hashes_of(ref)]
        stored = dict(zip(digests, self.store.get_chunks(digests)))
        return b"".join(b"".join(stored[h] for h in chunks.hashes_of(refs[i])) if i in refs
                        else bytes(chunks.chunk_length(i, node.size)) for i in range(chunks.chunk_count(node.size)))
