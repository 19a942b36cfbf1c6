"""FileBuffer against a plain bytearray: any sequence of writes and truncates reads back
the same bytes, and committing stores only chunks that are new."""
from __future__ import annotations

import trio
from hypothesis import given, settings, strategies as st

from lighthousefs import content
from lighthousefs.content import CHUNK_SIZE, FileBuffer


class ChunkStore(dict):
    async def fetch(self, digest: bytes) -> bytes:
        return self[digest]


ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3 * CHUNK_SIZE), st.binary(min_size=0, max_size=CHUNK_SIZE + 10)),
    st.tuples(st.just("truncate"), st.integers(0, 4 * CHUNK_SIZE)),
    st.tuples(st.just("commit")),
), max_size=12)


@settings(max_examples=150, deadline=None)
@given(initial=st.binary(max_size=2 * CHUNK_SIZE + 7), steps=ops)
def test_buffer_matches_bytearray(initial, steps):
    async def run():
        store = ChunkStore()
        hashes, chunks = content.split(initial)
        store.update(chunks)
        buf = FileBuffer(hashes, len(initial), store.fetch)
        model = bytearray(initial)
        for step in steps:
            if step[0] == "write":
                _, offset, data = step
                await buf.write(offset, data)
                if data and offset > len(model):  # a write of nothing extends nothing
                    model.extend(bytes(offset - len(model)))
                if data:
                    model[offset:offset + len(data)] = data
            elif step[0] == "truncate":
                size = step[1]
                await buf.truncate(size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            else:
                pending = buf.snapshot().seal()
                store.update(pending.chunks)
                buf.mark_committed(pending)
                assert not buf.dirty
                assert all(len(store[h]) == content.chunk_length(i, len(model)) or h == content.ZERO_CHUNK_HASH
                           for i, h in enumerate(pending.hashes))
            assert buf.size == len(model)
            assert await buf.read(0, len(model) + 100) == bytes(model)
        # Reads at any offset agree too.
        for offset in (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, len(model) // 2, len(model)):
            assert await buf.read(offset, 1000) == bytes(model[offset:offset + 1000])

    trio.run(run)


def test_small_edit_of_large_file_stores_one_chunk():
    async def run():
        store = ChunkStore()
        data = bytes(range(256)) * (4 * CHUNK_SIZE // 256)
        hashes, chunks = content.split(data)
        store.update(chunks)
        buf = FileBuffer(hashes, len(data), store.fetch)
        await buf.write(CHUNK_SIZE + 5, b"edit")
        pending = buf.snapshot().seal()
        assert len(pending.chunks) == 1
        assert pending.hashes[0] == hashes[0] and pending.hashes[2:] == hashes[2:]

    trio.run(run)


def test_copy_shares_chunks():
    data = b"x" * (3 * CHUNK_SIZE + 1)
    assert content.split(data)[0] == content.split(bytes(data))[0]


def test_writes_during_a_commit_stay_dirty():
    async def run():
        store = ChunkStore()
        buf = FileBuffer([], 0, store.fetch)
        await buf.write(0, b"first")
        pending = buf.snapshot().seal()
        await buf.write(5, b" second")      # arrives while the commit is on its way
        buf.mark_committed(pending)
        assert buf.changed and await buf.read(0, 100) == b"first second"

    trio.run(run)


def test_growing_to_a_gigabyte_costs_no_memory():
    async def run():
        buf = FileBuffer([], 0, ChunkStore().fetch)
        await buf.truncate(1 << 30)
        assert buf.dirty_bytes() == 0
        assert await buf.read((1 << 30) - 4, 10) == bytes(4)

    trio.run(run)
