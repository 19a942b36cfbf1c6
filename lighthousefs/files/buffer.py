"""The buffer of a file being written: stored chunks, the chunks changed since, holes."""
from __future__ import annotations

from typing import Awaitable, Callable

from .. import errors
from ..domain.chunks import (CHUNK_SIZE, MAX_FILE_SIZE, SPILL_CHUNKS, ZERO_CHUNK, ZERO_CHUNK_HASH, ChunkRef, Fetch,
                             chunk_count, chunk_length, content_digest, flat_list, hashes_of, is_zeros, refs_of,
                             seal_chunk)

READAHEAD_CHUNKS = 8
REBASE_PIECE = 1 << 20   # what rebase() copies at a time


# Stores full chunks of an open file (spill): returns one hash per chunk, None for zeros.
Put = Callable[[list], Awaitable[list]]


class FileBuffer:
    """The contents of one open file: stored chunks, the chunks changed since, and holes.

    Every chunk index below chunk_count(size) is in at most one of: `dirty` (exactly
    chunk_length(index, size) bytes), `_storing` (a full chunk on its way to the store,
    never changed again), `chunks` (a stored hash, or the pieces of the tail); an index
    in none of them is a hole (zeros). Writes and truncates load the chunks they touch
    into `dirty`, so `commit()` only hashes what changed; with `put`, full dirty chunks
    go to the store as they pile up, so memory does not grow with the file.

    While only `append()` changed it since the content it was loaded from or last
    committed (`base`, of `base_size` bytes), the buffer is that content plus appended
    bytes, and `rebase()` can move those bytes after another version of the file.
    """

    def __init__(self, chunks: list[bytes] | bytes, size: int, fetch: Fetch, put: Put | None = None):
        self.chunks: dict[int, ChunkRef] = refs_of(chunks, size)
        self.size = size
        self._stored_pieces = self._tail_pieces()
        self.dirty: dict[int, bytearray] = {}
        self._storing: dict[int, bytearray] = {}
        self._fetch = fetch
        self._put = put
        self.changed = False
        # Counts changes, so a commit can tell whether writes came in while it was stored.
        self.generation = 0
        self._read_end = 0   # where the last read ended: the next one there is sequential
        self.base_size = size
        self.base = content_digest(size, chunks)
        self.appends_only = True

    async def _chunk(self, ref: ChunkRef) -> bytes:
        if isinstance(ref, tuple):
            return b"".join(await self._fetch(list(ref)))
        if ref == ZERO_CHUNK_HASH:
            return ZERO_CHUNK
        [data] = await self._fetch([ref])
        return data

    async def _load(self, index: int) -> bytearray:
        buf = self.dirty.get(index)
        if buf is not None:
            return buf
        if index in self._storing:
            buf = bytearray(self._storing.pop(index))   # a copy: a worker may be reading it
        elif index in self.chunks:
            buf = bytearray(await self._chunk(self.chunks[index]))
            if index in self.dirty:
                return self.dirty[index]   # loaded by another write meanwhile
        else:
            buf = bytearray(chunk_length(index, self.size))
        self.chunks.pop(index, None)
        self.dirty[index] = buf
        return buf

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        indexes = range(offset // CHUNK_SIZE, chunk_count(end))
        ahead = self._ahead_of(indexes.stop) if offset == self._read_end else []
        self._read_end = end
        held = {i: self.dirty.get(i, self._storing.get(i)) for i in indexes}
        stored = await self._chunks_of([i for i in indexes if held[i] is None and i in self.chunks], ahead)
        parts = []
        for index in indexes:
            base = index * CHUNK_SIZE
            data = self.dirty.get(index)
            if data is None:
                data = held[index] if held[index] is not None else stored.get(index, ZERO_CHUNK)
            parts.append(bytes(data[max(offset - base, 0):end - base]))
        return b"".join(parts)

    def _ahead_of(self, start: int) -> list[bytes]:
        """The stored chunks after `start` that a sequential reader reads next."""
        return [digest for i in range(start, start + READAHEAD_CHUNKS) if i in self.chunks
                for digest in hashes_of(self.chunks[i]) if digest != ZERO_CHUNK_HASH]

    async def _chunks_of(self, indexes: list[int], ahead: list[bytes] = ()) -> dict[int, bytes]:
        """The stored bytes of these chunks, fetched in one call (a read of 128 KiB
        spans two or three chunks; on a cold cache each fetch is a store round trip)."""
        refs = {i: hashes_of(self.chunks[i]) for i in indexes}
        wanted = [digest for digests in refs.values() for digest in digests if digest != ZERO_CHUNK_HASH]
        fetched = {ZERO_CHUNK_HASH: ZERO_CHUNK}
        if wanted:
            fetched.update(zip(wanted, await (self._fetch(wanted, ahead) if ahead else self._fetch(wanted))))
        return {i: b"".join(fetched[digest] for digest in digests) for i, digests in refs.items()}

    @staticmethod
    def _check_size(size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise errors.FileTooLarge(f"a size of {size} bytes is past the largest file ({MAX_FILE_SIZE})")

    async def write(self, offset: int, data: bytes) -> int:
        """Write `data` at `offset`; the bytes written: as on ext4, a write that would
        pass the largest file is cut short there, and one starting there gets EFBIG."""
        if data:
            self._check_size(offset + 1)   # (before anything changes)
            self.appends_only = False
        return await self._write(offset, data)

    async def append(self, data: bytes) -> int:
        """Write at the end of the buffer (O_APPEND). The kernel holds the inode's lock
        across a write request, so two appends to one file never interleave."""
        return await self._write(self.size, data)

    async def rebase(self, chunks: bytes, size: int) -> None:
        """Put what was appended since `base` after the content `chunks` of `size` bytes
        instead: another writer's version of the file was stored in between. Nothing
        changes if the buffer was changed otherwise meanwhile (it then stores it all)."""
        while True:
            if not self.appends_only:
                return
            generation = self.generation
            fresh = FileBuffer(chunks, size, self._fetch, self._put)
            # In pieces, so the fresh buffer spills as it fills: a large append being
            # moved is never held whole.
            for start in range(self.base_size, self.size, REBASE_PIECE):
                piece = await self.read(start, min(REBASE_PIECE, self.size - start))
                await fresh._write(size + start - self.base_size, piece)
            if generation == self.generation:
                break   # (else more was appended meanwhile: take it too)
        self.chunks, self.size, self.dirty, self._storing = fresh.chunks, fresh.size, fresh.dirty, fresh._storing
        self._stored_pieces = fresh._stored_pieces
        self.base_size, self.base = size, fresh.base
        self.changed = True
        self.generation += 1

    async def _write(self, offset: int, data: bytes) -> int:
        if not data:
            return 0
        self._check_size(offset + 1)
        data = data[:MAX_FILE_SIZE - offset]
        end = offset + len(data)
        if len(self.dirty) > SPILL_CHUNKS and self._put is not None:
            # Before this write changes anything: if the store fails, the write fails whole.
            await self._spill()
        if end > self.size:
            await self._resize(end)
        pos = 0
        for index in range(offset // CHUNK_SIZE, chunk_count(end)):
            buf = await self._load(index)
            start = max(offset - index * CHUNK_SIZE, 0)
            take = min(CHUNK_SIZE - start, len(data) - pos)
            buf[start:start + take] = data[pos:pos + take]
            pos += take
        self.changed = True
        self.generation += 1
        return len(data)

    async def _spill(self) -> None:
        """Send the full dirty chunks to the store (content-addressed, so storing them
        before the event that names them is harmless) and keep only their hashes. A
        chunk written again meanwhile stays dirty (loaded from `_storing`)."""
        batch = {i: buf for i, buf in self.dirty.items() if len(buf) == CHUNK_SIZE}
        if not batch:
            return
        for index in batch:
            del self.dirty[index]
        self._storing.update(batch)
        try:
            digests = await self._put(list(batch.values()))
        except BaseException:
            for index, buf in batch.items():
                if self._storing.get(index) is buf:
                    del self._storing[index]
                    self.dirty[index] = buf
            raise
        for (index, buf), digest in zip(batch.items(), digests):
            if self._storing.get(index) is buf:
                del self._storing[index]
                if digest is not None:
                    self.chunks[index] = digest

    async def truncate(self, size: int) -> None:
        self._check_size(size)
        self.appends_only = False
        await self._resize(size)

    async def _resize(self, size: int) -> None:
        old = self.size
        self.generation += 1
        if size == old:
            self.changed = True
            return
        count = chunk_count(size)
        if size < old:
            for held in (self.dirty, self._storing, self.chunks):
                for index in [i for i in held if i >= count]:
                    del held[index]
            if size % CHUNK_SIZE and self._holds(count - 1):
                buf = await self._load(count - 1)
                del buf[size - (count - 1) * CHUNK_SIZE:]
        elif old % CHUNK_SIZE and self._holds(chunk_count(old) - 1):
            # Pad the old last chunk with zeros; the rest of the growth is a hole, so
            # growing a file to 1 TiB costs nothing.
            last = chunk_count(old) - 1
            buf = await self._load(last)
            buf.extend(bytes(chunk_length(last, size) - len(buf)))
        self.size = size
        self.changed = True

    def _holds(self, index: int) -> bool:
        """Does the chunk have bytes (not a hole)?"""
        return index in self.dirty or index in self._storing or index in self.chunks

    def snapshot(self) -> "Pending":
        """What a commit must store now: copies of the dirty chunks, the rest by hash.

        Cheap (copies only dirty bytes: spilled chunks are stored already), so it runs
        on the trio thread; the hashing in Pending.seal() may then run in a worker
        thread while writes continue.
        """
        new = {i: bytes(buf) for held in (self.dirty, self._storing) for i, buf in held.items()}
        # The pieces of the committed tail are stored: an append re-stores only the
        # piece it changed.
        return Pending(dict(self.chunks), new, self.size, self.generation, self._stored_pieces,
                       self.base if self.appends_only and self.changed else None)

    def _tail_pieces(self) -> frozenset:
        last = self.chunks.get(chunk_count(self.size) - 1)
        return frozenset(last) if isinstance(last, tuple) else frozenset()

    def mark_committed(self, pending: "Pending") -> None:
        """The commit of `pending` is durable: forget the dirty chunks it covered.

        If the buffer changed since the snapshot, it stays dirty for the next commit;
        if only by appends, they were made on what was stored, the new base.
        """
        if pending.generation == self.generation:
            self.chunks = pending.refs
            self._stored_pieces = self._tail_pieces()
            self.dirty.clear()
            self._storing.clear()
            self.changed = False
            self.appends_only = True
        if self.appends_only:
            self.base_size, self.base = pending.size, content_digest(pending.size, pending.hashes)

    def dirty_bytes(self) -> int:
        return sum(len(buf) for buf in self.dirty.values())


class Pending:
    """A snapshot of a buffer on its way to the store."""

    def __init__(self, stored: dict[int, ChunkRef], new: dict[int, bytes], size: int, generation: int,
                 known: frozenset = frozenset(), base: bytes | None = None):
        self.stored = stored        # reference per stored chunk index (holes are absent)
        self.new = new              # the new chunks' bytes, by index
        self.size = size
        self.generation = generation
        self.known = known          # pieces already in the store
        self.base = base            # appends only: the digest of the content they were made on
        self.refs: dict[int, ChunkRef] = {}
        self.hashes: list[bytes] = []   # flat, as events carry them
        self.chunks: dict[bytes, bytes] = {}

    def seal(self) -> "Pending":
        """Hash the new chunks (pure CPU; large ones are sealed in a worker thread)."""
        self.refs = dict(self.stored)
        for index, data in self.new.items():
            if not is_zeros(data):      # zeros are a hole
                self.refs[index] = seal_chunk(data, self.chunks, self.known)
        self.hashes = flat_list(self.refs, self.size)
        return self
