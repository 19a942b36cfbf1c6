"""The `events` file's line index, against a real SQLite store: built once, extended
as events are applied, and a build that fails midway leaves nothing queued."""
from __future__ import annotations

import trio
import trio.testing

from lighthousefs import errors
from lighthousefs.domain.events import Draft
from lighthousefs.store.sqlite import SQLiteStore
from lighthousefs.views.events_file import EventsFile


def note(i: int) -> Draft:
    return Draft("note", "projects/a", {"i": i}, "test")


class Log:
    """A real SQLite store and the seq a daemon would have applied, as EventsFile sees them."""

    def __init__(self, tmp_path):
        self.store = SQLiteStore(str(tmp_path / "s.db"))
        self.applied = 0

    def append(self, drafts):
        stored = self.store.append(drafts, {})
        self.applied = stored[-1].seq
        return stored

    def rendered_size(self) -> int:
        return sum(len(e.to_json_line()) for e in self.store.read(0, 10**6))


class Guarded:
    """The guarded store's face (store/guarded.py) that EventsFile reads through, each
    call made by `call` (a test's stand-in for the worker thread and the breaker)."""

    def __init__(self, store, call):
        self.store = store
        self._call = call

    async def read(self, after_seq, limit=1000):
        return await self._call(self.store.read, after_seq, limit)


def test_index_matches_the_rendered_log(tmp_path):
    log = Log(tmp_path)
    log.append([note(i) for i in range(30)])

    async def call(fn, *args):
        return fn(*args)

    async def main():
        events_file = EventsFile(Guarded(log.store, call), lambda e: e if e.seq % 3 != 0 else None, lambda: log.applied)
        await events_file.ensure_built()
        [later] = log.append([note(99)])
        events_file.on_applied(later)
        whole = b"".join(e.to_json_line() for e in log.store.read(0, 100) if e.seq % 3 != 0)
        assert events_file.size == len(whole)
        assert await events_file.read(0, 10**6) == whole
        assert await events_file.read(17, 100) == whole[17:117]
        assert await events_file.read(len(whole), 100) == b""
    trio.run(main)
    log.store.close()


def test_a_failed_build_queues_nothing_and_the_next_one_completes(tmp_path):
    log = Log(tmp_path)
    for start in range(0, 12000, 1000):
        log.append([note(i) for i in range(start, start + 1000)])
    reads = []
    store_down = trio.Event()   # set once an event was applied during the build

    async def call(fn, *args):
        reads.append(args)
        if len(reads) == 2:   # the store goes away after the first batch of the build
            await store_down.wait()
            raise errors.StoreUnavailable("down")
        return fn(*args)

    async def main():
        events_file = EventsFile(Guarded(log.store, call), lambda e: e, lambda: log.applied)
        failed = []

        async def build():
            try:
                await events_file.ensure_built()
            except errors.StoreUnavailable as exc:
                failed.append(exc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(build)
            await trio.testing.wait_all_tasks_blocked()
            [applied] = log.append([note(-1)])   # applied while the build runs
            events_file.on_applied(applied)
            assert events_file._early == [applied]
            store_down.set()
        assert failed, "the build should have met the store going away"
        assert not events_file._early and not events_file._building
        events_file.on_applied(log.append([note(-2)])[0])   # not built: ignored
        assert not events_file._early
        await events_file.ensure_built()
        assert events_file.size == log.rendered_size()
    trio.run(main)
    log.store.close()


def test_an_event_applied_while_waiting_for_the_build_is_indexed(tmp_path):
    """The builder waits for the lock (another build holds it); an event applied then
    is neither early nor below the seq the build reads up to: the build must see it."""
    log = Log(tmp_path)
    log.append([note(i) for i in range(10)])

    async def call(fn, *args):
        return fn(*args)

    async def main():
        events_file = EventsFile(Guarded(log.store, call), lambda e: e, lambda: log.applied)
        async with trio.open_nursery() as nursery:
            async with events_file._build_lock:
                nursery.start_soon(events_file.ensure_built)
                await trio.testing.wait_all_tasks_blocked()
                events_file.on_applied(log.append([note(10)])[0])
        assert events_file.size == log.rendered_size()
    trio.run(main)
    log.store.close()
