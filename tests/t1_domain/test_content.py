"""FileBuffer against a plain bytearray: any sequence of writes and truncates reads back
the same bytes, and committing stores only chunks that are new."""
from __future__ import annotations

import errno
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from lighthousefs import errors
from lighthousefs.domain import chunks as content
from lighthousefs.domain.chunks import CHUNK_SIZE
from lighthousefs.files.buffer import READAHEAD_CHUNKS, FileBuffer


class ChunkStore(dict):
    async def fetch(self, digests: list[bytes]) -> list[bytes]:
        return [self[digest] for digest in digests]


class SpillingStore(ChunkStore):
    """A store that full chunks of an open file go to while it is written."""

    def __init__(self):
        super().__init__()
        self.fail = False

    async def put(self, datas):
        await trio.sleep(0)          # writes may arrive meanwhile
        if self.fail:
            raise errors.StoreUnavailable("the store is away")
        hashes, chunks = content.seal_full(datas)
        self.update(chunks)
        return hashes


def assert_layout(hashes: list[bytes], size: int, store: dict, untouched_tail: bytes | None = None) -> None:
    """Full 64 KiB chunks, then the tail: one chunk up to 4 KiB, else 4 KiB pieces (or
    `untouched_tail`, a whole tail stored before pieces existed and not changed since)."""
    for index, ref in content.refs_of(hashes, size).items():
        length = content.chunk_length(index, size)
        if isinstance(ref, tuple):
            assert length > content.PIECE_SIZE and length < CHUNK_SIZE
            assert [len(store[p]) for p in ref[:-1]] == [content.PIECE_SIZE] * (len(ref) - 1)
            assert sum(len(store[p]) for p in ref) == length
        else:
            assert ref == content.ZERO_CHUNK_HASH or len(store[ref]) == length
            assert length <= content.PIECE_SIZE or length == CHUNK_SIZE or ref == untouched_tail


ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3 * CHUNK_SIZE), st.binary(min_size=0, max_size=CHUNK_SIZE + 10)),
    st.tuples(st.just("truncate"), st.integers(0, 4 * CHUNK_SIZE)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("append"), st.binary(min_size=0, max_size=CHUNK_SIZE + 10)),
    # Another writer's version of the file was stored: what was appended goes after it.
    st.tuples(st.just("rebase"), st.binary(max_size=2 * CHUNK_SIZE + 7)),
), max_size=12)


def split_before_pieces(data: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    """How stores written before tail pieces existed cut a file: 64 KiB chunks only."""
    pieces = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    return [content.chunk_hash(p) for p in pieces], {content.chunk_hash(p): p for p in pieces}


@settings(max_examples=300, deadline=None)
@given(initial=st.binary(max_size=2 * CHUNK_SIZE + 7), old_layout=st.booleans(), spill=st.booleans(), steps=ops)
def test_buffer_matches_bytearray(initial, old_layout, spill, steps):
    async def run():
        store = SpillingStore()
        hashes, chunks = (split_before_pieces if old_layout else content.split)(initial)
        store.update(chunks)
        buf = FileBuffer(hashes, len(initial), store.fetch, store.put if spill else None)
        model = bytearray(initial)
        base = len(initial)   # where the bytes appended since the base begin in the model
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
            elif step[0] == "append":
                await buf.append(step[1])
                model.extend(step[1])
            elif step[0] == "rebase":
                other, chunks = content.split(step[1])
                store.update(chunks)
                await buf.rebase(content.pack(other), len(step[1]))
                if buf.appends_only:
                    model[:base] = step[1]
                    base = len(step[1])
                    assert buf.base == content.content_digest(base, other)
            else:
                pending = buf.snapshot().seal()
                store.update(pending.chunks)
                buf.mark_committed(pending)
                base = len(model)
                assert not buf.dirty and buf.appends_only
                assert buf.base == content.content_digest(pending.size, pending.hashes)
                assert_layout(pending.hashes, len(model), store, hashes[-1] if old_layout and hashes else None)
            assert buf.size == len(model)
            assert await buf.read(0, len(model) + 100) == bytes(model)
        # Reads at any offset agree too.
        for offset in (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, len(model) // 2, len(model)):
            assert await buf.read(offset, 1000) == bytes(model[offset:offset + 1000])

    spill_chunks, content.SPILL_CHUNKS = content.SPILL_CHUNKS, 0   # spill before every write
    try:
        trio.run(run)
    finally:
        content.SPILL_CHUNKS = spill_chunks


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


def test_an_append_stores_one_piece_of_the_tail():
    """A log of 40 KiB plus a 100-byte line: one new piece of at most 4 KiB is stored,
    not a new 64 KiB chunk; crossing 64 KiB stores the full chunk once."""
    async def run():
        store = ChunkStore()
        data = bytes(range(256)) * 160
        hashes, chunks = content.split(data)
        store.update(chunks)
        buf = FileBuffer(hashes, len(data), store.fetch)
        await buf.write(len(data), b"x" * 99 + b"\n")
        pending = buf.snapshot().seal()
        assert len(pending.chunks) == 1 and len(next(iter(pending.chunks.values()))) <= content.PIECE_SIZE
        store.update(pending.chunks)
        buf.mark_committed(pending)
        await buf.write(buf.size, b"y" * (CHUNK_SIZE - buf.size + 10))
        pending = buf.snapshot().seal()
        assert sorted(len(c) for c in pending.chunks.values()) == [10, CHUNK_SIZE]

    trio.run(run)


def test_a_file_stored_before_pieces_reads_and_then_gains_pieces():
    async def run():
        store = ChunkStore()
        data = b"old layout " * 1000
        hashes, chunks = split_before_pieces(data)
        assert len(hashes) == 1 and len(data) > content.PIECE_SIZE
        store.update(chunks)
        buf = FileBuffer(hashes, len(data), store.fetch)
        assert await buf.read(0, len(data)) == data
        await buf.write(len(data), b"!")
        pending = buf.snapshot().seal()
        assert len(pending.hashes) == 3 and await buf.read(0, len(data) + 1) == data + b"!"

    trio.run(run)


def test_a_chunk_list_that_fits_no_layout_is_refused():
    with pytest.raises(ValueError):
        content.refs_of([b"h" * 20] * 5, 2 * CHUNK_SIZE + 10)


def test_a_read_across_chunks_fetches_them_in_one_call():
    async def run():
        store = ChunkStore()
        data = bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"tail" * 2000   # 3 chunks + pieces
        hashes, chunks = content.split(data)
        store.update(chunks)
        calls = []

        async def fetch(digests):
            calls.append(len(digests))
            return await store.fetch(digests)
        buf = FileBuffer(hashes, len(data), fetch)
        assert await buf.read(CHUNK_SIZE - 10, 2 * CHUNK_SIZE) == data[CHUNK_SIZE - 10:3 * CHUNK_SIZE - 10]
        assert calls == [3]
        assert await buf.read(0, len(data)) == data and calls == [3, 3 + 2]   # the tail is two pieces
    trio.run(run)


def test_a_sequential_reader_brings_the_next_chunks_in_the_same_round_trip():
    async def run():
        data = random.Random(0).randbytes(20 * CHUNK_SIZE)           # 20 distinct chunks
        hashes, chunks = content.split(data)
        store = ChunkStore(chunks)
        cache: set[bytes] = set()
        round_trips = []

        async def fetch(digests, ahead=()):
            """A store behind an L1 that keeps what a round trip brought."""
            missing = [d for d in digests if d not in cache]
            if missing:
                round_trips.append((len(missing), len(ahead)))
                cache.update(missing, ahead)
            return await store.fetch(digests)
        buf = FileBuffer(hashes, len(data), fetch)
        read = 128 * 1024
        assert b"".join([await buf.read(off, read) for off in range(0, len(data), read)]) == data
        # 10 reads of 2 chunks; each round trip brings 8 more: 2 round trips, not 10.
        assert round_trips == [(2, READAHEAD_CHUNKS)] * 2
        cache.clear()
        round_trips.clear()
        await buf.read(5 * CHUNK_SIZE, read)      # not where the last read ended: no readahead
        assert round_trips == [(2, 0)]
    trio.run(run)


def test_appends_move_after_another_version_of_the_file():
    """What O_APPEND added since the base goes after another writer's content; appends
    during and after a commit build on what that commit stored (never twice)."""
    async def run():
        store = ChunkStore()
        hashes, chunks = content.split(b"head\n")
        store.update(chunks)
        buf = FileBuffer(hashes, 5, store.fetch)
        await buf.append(b"mine 1\n")
        pending = buf.snapshot().seal()
        assert pending.base == content.content_digest(5, hashes)
        await buf.append(b"mine 2\n")            # while the commit is on its way
        buf.mark_committed(pending)
        assert buf.base == content.content_digest(pending.size, pending.hashes) and buf.appends_only
        # Meanwhile another node appended: mine 2 alone moves after its content.
        theirs = b"head\nmine 1\n" + b"t" * (CHUNK_SIZE + 10) + b"\n"
        other, chunks = content.split(theirs)
        store.update(chunks)
        await buf.rebase(content.pack(other), len(theirs))
        assert await buf.read(0, 1 << 20) == theirs + b"mine 2\n"
        pending = buf.snapshot().seal()
        assert pending.base == content.content_digest(len(theirs), other)
        buf.mark_committed(pending)
        assert not buf.changed
        # A write at an offset is no append: the commit names no base (last close wins).
        await buf.write(0, b"H")
        assert not buf.appends_only and buf.snapshot().base is None

    trio.run(run)


# ---- holes and large files -------------------------------------------------------------

TIB = 1 << 40


def test_a_terabyte_hole_is_one_list_entry_and_reads_zeros():
    """Unfixed: a list entry per 64 KiB of hole (16M entries, a 371 MB event at 1 TiB)."""
    async def run():
        store = ChunkStore()
        buf = FileBuffer([], 0, store.fetch)
        await buf.write(0, b"head")
        await buf.truncate(TIB)
        await buf.write(TIB // 2, b"middle")
        await buf.write(TIB + 10, b"end")          # past the end: the gap is a hole too
        assert buf.dirty_bytes() <= 3 * CHUNK_SIZE
        pending = buf.snapshot().seal()
        assert len(pending.hashes) <= 7 and len(pending.chunks) == 3
        store.update(pending.chunks)
        buf.mark_committed(pending)
        again = FileBuffer(content.pack(pending.hashes), TIB + 13, store.fetch)
        for reader in (buf, again):
            assert await reader.read(0, 6) == b"head\0\0"
            assert await reader.read(TIB // 2 - 2, 10) == b"\0\0middle\0\0"
            assert await reader.read(TIB - 1, 100) == bytes(11) + b"end"
            assert await reader.read(12345 * CHUNK_SIZE + 7, 3 * CHUNK_SIZE) == bytes(3 * CHUNK_SIZE)

    trio.run(run)


def test_sizes_past_the_largest_file_are_refused_before_anything_changes():
    async def run():
        buf = FileBuffer([], 0, ChunkStore().fetch)
        await buf.write(0, b"kept")
        for change in (buf.truncate(999999999999999), buf.truncate(content.MAX_FILE_SIZE + 1),
                       buf.write(content.MAX_FILE_SIZE, b"x")):
            with pytest.raises(errors.FileTooLarge) as caught:
                await change
            assert caught.value.errno == errno.EFBIG
        assert await buf.write(content.MAX_FILE_SIZE - 1, b"xy") == 1   # cut short at the largest file
        assert await buf.read(content.MAX_FILE_SIZE - 2, 10) == b"\0x"
        await buf.truncate(4)
        assert await buf.read(0, 100) == b"kept"

    trio.run(run)


def test_lists_stored_before_holes_still_read():
    """Zero chunks named one by one by ZERO_CHUNK_HASH: the same file as a hole."""
    async def run():
        store = ChunkStore({content.chunk_hash(b"tail"): b"tail"})
        old = [content.chunk_hash(b"tail")]
        old = [content.ZERO_CHUNK_HASH] * 3 + old
        buf = FileBuffer(content.pack(old), 3 * CHUNK_SIZE + 4, store.fetch)
        assert await buf.read(3 * CHUNK_SIZE - 2, 10) == b"\0\0tail"
        await buf.write(0, b"x")
        pending = buf.snapshot().seal()
        assert pending.hashes[1:] == [content.hole(2), content.chunk_hash(b"tail")]

    trio.run(run)


@pytest.mark.parametrize("hashes, size", [
    ([content.hole(3)], 2 * CHUNK_SIZE),                         # a hole past the end
    ([content.hole(1)], 2 * CHUNK_SIZE),                         # one too few
    ([b"h" * 20, content.hole(1), b"p" * 20], CHUNK_SIZE + 10),  # one entry too many
])
def test_a_list_with_holes_that_fits_no_size_is_refused(hashes, size):
    with pytest.raises(ValueError):
        content.refs_of(hashes, size)


def test_full_chunks_leave_an_open_file_as_it_is_written():
    """Unfixed: every written byte stayed in the buffer until close."""
    async def run():
        store = SpillingStore()
        buf = FileBuffer([], 0, store.fetch, store.put)
        data = random.Random(1).randbytes(300 * CHUNK_SIZE + 123)
        most = 0
        for offset in range(0, len(data), 128 * 1024):
            await buf.write(offset, data[offset:offset + 128 * 1024])
            most = max(most, buf.dirty_bytes())
        assert most <= (content.SPILL_CHUNKS + 2) * CHUNK_SIZE
        assert len(store) >= 250 * 1 and await buf.read(0, len(data)) == data
        pending = buf.snapshot().seal()
        assert len(pending.new) <= content.SPILL_CHUNKS + 2   # the close stores only the rest
        assert pending.hashes == content.split(data)[0]

    trio.run(run)


def test_a_write_during_a_spill_and_a_failed_spill_lose_nothing():
    async def run():
        store = SpillingStore()
        buf = FileBuffer([], 0, store.fetch, store.put)
        data = bytearray(random.Random(2).randbytes((content.SPILL_CHUNKS + 2) * CHUNK_SIZE))
        await buf.write(0, bytes(data))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(buf.write, len(data), b"more")          # spills first
            nursery.start_soon(buf.write, 5, b"rewritten meanwhile")   # a chunk on its way
        data[5:24] = b"rewritten meanwhile"
        data += b"more"
        assert await buf.read(0, len(data)) == bytes(data)
        store.fail = True
        refused = False
        for offset in range(0, len(data), CHUNK_SIZE):     # chunks dirty again, until a spill fails
            try:
                await buf.write(offset, b"R")
            except errors.StoreUnavailable:
                refused = True
                break
            data[offset:offset + 1] = b"R"
        assert refused and await buf.read(0, len(data)) == bytes(data)   # the refused write changed nothing
        store.fail = False
        pending = buf.snapshot().seal()
        store.update(pending.chunks)
        buf.mark_committed(pending)
        assert pending.hashes == content.split(bytes(data))[0]
        assert await FileBuffer(pending.hashes, len(data), store.fetch).read(0, len(data)) == bytes(data)

    trio.run(run)


def test_written_zeros_become_a_hole():
    async def run():
        store = SpillingStore()
        buf = FileBuffer([], 0, store.fetch, store.put)
        for offset in range(0, 100 * CHUNK_SIZE, CHUNK_SIZE):
            await buf.write(offset, bytes(CHUNK_SIZE))       # dd if=/dev/zero
        pending = buf.snapshot().seal()
        assert pending.hashes == [content.hole(100)] and not store and not pending.chunks

    trio.run(run)


def test_split_makes_zeros_a_hole():
    data = b"x" * 10 + bytes(5 * CHUNK_SIZE) + b"y"
    hashes, chunks = content.split(data)
    assert hashes[1:] == [content.hole(4), content.chunk_hash(bytes(10) + b"y")]
    assert len(chunks) == 2


def test_rebasing_a_large_append_keeps_the_buffer_small():
    """Moving 256 MiB of appends after another version of the file: the fresh buffer
    spills as it fills, as the writes did (unfixed: 4097 dirty chunks, all of it)."""
    stored = {}

    async def fetch(digests, ahead=()):   # (sequential reads ask for readahead too)
        return [stored[d] for d in digests]

    async def put(datas):
        hashes, chunks = content.seal_full(datas)
        stored.update(chunks)
        return hashes

    async def run():
        buf = FileBuffer([], 0, fetch, put)
        for i in range(256):
            await buf.append(bytes([1 + i % 200]) * (1 << 20))
        other, chunks = content.split(b"x" * 100)
        stored.update(chunks)
        await buf.rebase(content.pack(other), 100)
        assert len(buf.dirty) <= content.SPILL_CHUNKS + 17
        assert await buf.read(0, 101) == b"x" * 100 + b"\x01"
        assert await buf.read(100 + (255 << 20), 1 << 20) == bytes([1 + 255 % 200]) * (1 << 20)

    trio.run(run)
