"""File contents as content-addressed chunks, and the buffer of a file being written.

A file is a list of fixed-size chunks named by their hash (the last one may be
short). A copy of a file, or a rewrite that changes a small part of a large one,
stores only the chunks whose bytes are new. Fixed-size chunks were chosen over
content-defined chunking because agents' files are mostly small and rewritten in
place; see docs/decisions.md.
"""
from __future__ import annotations

import hashlib
from typing import Awaitable, Callable

CHUNK_SIZE = 64 * 1024
ZERO_CHUNK = bytes(CHUNK_SIZE)


HASH_SIZE = 20


def chunk_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def pack(hashes) -> bytes:
    """A file's chunk list as one bytes object: 20 bytes a chunk. The projection keeps
    this form (one object a file instead of a tuple of one object a chunk)."""
    return b"".join(hashes)


def unpack(packed: bytes) -> list[bytes]:
    return [packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


ZERO_CHUNK_HASH = chunk_hash(ZERO_CHUNK)


def split(data: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Chunk hashes of `data`, and the chunks by hash."""
    hashes, chunks = [], {}
    for start in range(0, len(data), CHUNK_SIZE):
        piece = data[start:start + CHUNK_SIZE]
        digest = chunk_hash(piece)
        hashes.append(digest)
        chunks[digest] = piece
    return hashes, chunks


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_SIZE)


def chunk_length(index: int, size: int) -> int:
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


Fetch = Callable[[bytes], Awaitable[bytes]]


class FileBuffer:
    """The contents of one open file: committed chunks plus the chunks changed since.

    Invariant: len(chunks) == chunk_count(size), and for every index either
    `dirty[index]` holds exactly chunk_length(index, size) bytes, or `chunks[index]`
    names a stored chunk of exactly that length (`None` only where dirty). Writes and truncates load the chunks they touch into
    `dirty`, so `commit()` only hashes what changed.
    """

    def __init__(self, chunks: list[bytes] | bytes, size: int, fetch: Fetch):
        self.chunks: list[bytes | None] = unpack(chunks) if isinstance(chunks, bytes) else list(chunks)
        self.size = size
        if len(self.chunks) != chunk_count(size):
            raise ValueError(f"{len(self.chunks)} chunks for a size of {size}")
        self.dirty: dict[int, bytearray] = {}
        self._fetch = fetch
        self.changed = False
        # Counts changes, so a commit can tell whether writes came in while it was stored.
        self.generation = 0

    async def _chunk(self, digest: bytes) -> bytes:
        if digest == ZERO_CHUNK_HASH:
            return ZERO_CHUNK
        return await self._fetch(digest)

    async def _load(self, index: int) -> bytearray:
        buf = self.dirty.get(index)
        if buf is None:
            buf = bytearray(await self._chunk(self.chunks[index]))
            self.dirty[index] = buf
        return buf

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts = []
        for index in range(offset // CHUNK_SIZE, chunk_count(end)):
            base = index * CHUNK_SIZE
            buf = self.dirty.get(index)
            data = buf if buf is not None else await self._chunk(self.chunks[index])
            parts.append(bytes(data[max(offset - base, 0):end - base]))
        return b"".join(parts)

    async def write(self, offset: int, data: bytes) -> None:
        if not data:
            return
        end = offset + len(data)
        if end > self.size:
            await self.truncate(end)
        pos = 0
        for index in range(offset // CHUNK_SIZE, chunk_count(end)):
            buf = await self._load(index)
            start = max(offset - index * CHUNK_SIZE, 0)
            take = min(CHUNK_SIZE - start, len(data) - pos)
            buf[start:start + take] = data[pos:pos + take]
            pos += take
        self.changed = True
        self.generation += 1

    async def truncate(self, size: int) -> None:
        old = self.size
        self.generation += 1
        if size == old:
            self.changed = True
            return
        if size < old:
            for index in [i for i in self.dirty if i >= chunk_count(size)]:
                del self.dirty[index]
            del self.chunks[chunk_count(size):]
            if size % CHUNK_SIZE:
                last = chunk_count(size) - 1
                buf = await self._load(last)
                del buf[size - last * CHUNK_SIZE:]
                self.chunks[last] = None
        else:
            # Pad the old last chunk with zeros; whole new chunks are the shared zero
            # chunk, so growing a file to 1 GiB costs no memory.
            if old % CHUNK_SIZE:
                last = chunk_count(old) - 1
                buf = await self._load(last)
                buf.extend(bytes(chunk_length(last, size) - len(buf)))
                self.chunks[last] = None
            for index in range(chunk_count(old), chunk_count(size)):
                length = chunk_length(index, size)
                if length == CHUNK_SIZE:
                    self.chunks.append(ZERO_CHUNK_HASH)
                else:
                    self.chunks.append(None)
                    self.dirty[index] = bytearray(length)
        self.size = size
        self.changed = True

    def snapshot(self) -> "Pending":
        """What a commit must store now: copies of the dirty chunks, the rest by hash.

        Cheap (copies only dirty bytes), so it runs on the trio thread; the hashing in
        Pending.seal() may then run in a worker thread while writes continue.
        """
        stored, new = [], {}
        for index in range(chunk_count(self.size)):
            buf = self.dirty.get(index)
            if buf is None:
                stored.append(self.chunks[index])
            else:
                stored.append(None)
                new[index] = bytes(buf)
        return Pending(stored, new, self.size, self.generation)

    def mark_committed(self, pending: "Pending") -> None:
        """The commit of `pending` is durable: forget the dirty chunks it covered.

        If the buffer changed since the snapshot, it stays dirty for the next commit.
        """
        if pending.generation == self.generation:
            self.chunks = list(pending.hashes)
            self.dirty.clear()
            self.changed = False

    def dirty_bytes(self) -> int:
        return sum(len(buf) for buf in self.dirty.values())


class Pending:
    """A snapshot of a buffer on its way to the store."""

    def __init__(self, stored: list[bytes | None], new: dict[int, bytes], size: int, generation: int):
        self.stored = stored        # hash per chunk index, None where the chunk is new
        self.new = new              # the new chunks' bytes, by index
        self.size = size
        self.generation = generation
        self.hashes: list[bytes] = []
        self.chunks: dict[bytes, bytes] = {}

    def seal(self) -> "Pending":
        """Hash the new chunks (pure CPU; large ones are sealed in a worker thread)."""
        for index, digest in enumerate(self.stored):
            if digest is None:
                data = self.new[index]
                digest = chunk_hash(data)
                self.chunks[digest] = data
            elif digest == ZERO_CHUNK_HASH:
                self.chunks[digest] = ZERO_CHUNK
            self.hashes.append(digest)
        return self
