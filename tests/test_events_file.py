"""The `events` file's line index, against a real SQLite store: built once, extended
as events are applied, and a build that fails midway leaves nothing queued."""
from __future__ import annotations

import trio

from lighthousefs import errors
from lighthousefs.events import Draft
from lighthousefs.events_file import EventsFile
from lighthousefs.store_sqlite import SQLiteStore


def note(i: int) -> Draft:
    return Draft("note", "projects/a", {"i": i}, "test")


def test_index_matches_the_rendered_log(tmp_path):
    store = SQLiteStore(str(tmp_path / "s.db"))
    stored = store.append([note(i) for i in range(30)], {})

    async def call(fn, *args):
        return fn(*args)

    async def main():
        events_file = EventsFile(store, call, lambda e: e.seq % 3 != 0)
        await events_file.ensure_built(stored[-1].seq)
        [later] = store.append([note(99)], {})
        events_file.on_applied(later)
        whole = b"".join(e.to_json_line() for e in store.read(0, 100) if e.seq % 3 != 0)
        assert events_file.size == len(whole)
        assert await events_file.read(0, 10**6) == whole
        assert await events_file.read(17, 100) == whole[17:117]
        assert await events_file.read(len(whole), 100) == b""
    trio.run(main)
    store.close()


def test_a_failed_build_queues_nothing_and_the_next_one_completes(tmp_path):
    store = SQLiteStore(str(tmp_path / "s.db"))
    for start in range(0, 12000, 1000):
        stored = store.append([note(i) for i in range(start, start + 1000)], {})
    reads = []

    async def call(fn, *args):
        reads.append(args)
        if len(reads) == 2:   # the store goes away after the first batch of the build
            raise errors.StoreUnavailable("down")
        return fn(*args)

    async def main():
        events_file = EventsFile(store, call, lambda e: True)

        async def build():
            try:
                await events_file.ensure_built(stored[-1].seq)
            except errors.StoreUnavailable:
                pass
        async with trio.open_nursery() as nursery:
            nursery.start_soon(build)
            await trio.sleep(0)
            [applied] = store.append([note(-1)], {})   # applied while the build runs
            events_file.on_applied(applied)
        assert not events_file._early and not events_file._building
        events_file.on_applied(store.append([note(-2)], {})[0])   # not built: ignored
        assert not events_file._early
        await events_file.ensure_built(store.last_seq())
        assert events_file.size == sum(len(e.to_json_line()) for e in store.read(0, 10**6))
    trio.run(main)
    store.close()
