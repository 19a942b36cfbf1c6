"""File contents as content-addressed chunks, and the buffer of a file being written.

A file is a list of fixed-size 64 KiB chunks named by their hash. The last chunk, when
it is partial and longer than 4 KiB, is stored as 4 KiB pieces instead: appending a
line to a log then stores one new piece (at most 4 KiB) rather than a new copy of up
to 64 KiB, and once the tail fills up it becomes one 64 KiB chunk (so every byte is
rewritten about once more). A copy of a file, or a rewrite that changes a small part
of a large one, stores only the chunks whose bytes are new. Fixed-size chunks were
chosen over content-defined chunking because agents' files are mostly small and
rewritten in place; see docs/decisions.md.

A file's chunk list, as events and the projection hold it, is flat: the hashes of
the full chunks, then those of the tail. The tail is one hash when it is short (or
was written before pieces existed) and two or more pieces otherwise, so the size and
the length of the list say which: no format change.
"""
from __future__ import annotations

import hashlib
from typing import Awaitable, Callable

CHUNK_SIZE = 64 * 1024
PIECE_SIZE = 4 * 1024
ZERO_CHUNK = bytes(CHUNK_SIZE)


HASH_SIZE = 20

# One chunk of a file: a hash, or (for a partial last chunk) a tuple of piece hashes.
ChunkRef = bytes | tuple[bytes, ...]


def chunk_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def pack(hashes) -> bytes:
    """A file's chunk list as one bytes object: 20 bytes a chunk. The projection keeps
    this form (one object a file instead of a tuple of one object a chunk)."""
    return b"".join(hashes)


def content_digest(size: int, hashes) -> bytes:
    """Names one version of a file's content by its size and chunk list (packed or
    flat): an append names the content it was made on (tree.py, WRITE's `base`)."""
    packed = hashes if isinstance(hashes, bytes) else pack(hashes)
    return hashlib.blake2b(size.to_bytes(8, "little") + packed, digest_size=16).digest()


def unpack(packed: bytes) -> list[bytes]:
    return [packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


ZERO_CHUNK_HASH = chunk_hash(ZERO_CHUNK)


def _chunked(data: bytes, size: int, chunks: dict[bytes, bytes], known: frozenset = frozenset()) -> list[bytes]:
    """Hashes of `data` cut every `size` bytes; pieces not in `known` go into `chunks`."""
    hashes = []
    for start in range(0, len(data), size):
        piece = data[start:start + size]
        digest = chunk_hash(piece)
        if digest not in known:
            chunks[digest] = piece
        hashes.append(digest)
    return hashes


def seal_chunk(data: bytes, chunks: dict[bytes, bytes], known: frozenset = frozenset()) -> ChunkRef:
    """The reference of one chunk's bytes: a hash, or piece hashes for a partial chunk
    longer than a piece. New bytes go into `chunks` (pieces in `known` are stored already)."""
    if len(data) <= PIECE_SIZE or len(data) == CHUNK_SIZE:
        digest = chunk_hash(data)
        chunks[digest] = data
        return digest
    return tuple(_chunked(data, PIECE_SIZE, chunks, known))


def split(data: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    """The flat chunk list of `data`, and the chunks by hash."""
    chunks: dict[bytes, bytes] = {}
    refs = [seal_chunk(data[start:start + CHUNK_SIZE], chunks) for start in range(0, len(data), CHUNK_SIZE)]
    return flatten(refs), chunks


def flatten(refs: list[ChunkRef]) -> list[bytes]:
    out: list[bytes] = []
    for ref in refs:
        if isinstance(ref, tuple):
            out.extend(ref)
        else:
            out.append(ref)
    return out


def refs_of(hashes: list[bytes], size: int) -> list[ChunkRef]:
    """One reference per chunk from a flat list: the pieces of the tail become a tuple."""
    full = size // CHUNK_SIZE
    count = chunk_count(size)
    if len(hashes) == count:
        return list(hashes)
    if size % CHUNK_SIZE and len(hashes) == full + -(-(size % CHUNK_SIZE) // PIECE_SIZE):
        return list(hashes[:full]) + [tuple(hashes[full:])]
    raise ValueError(f"{len(hashes)} chunk hashes for a size of {size}")


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_SIZE)


def chunk_length(index: int, size: int) -> int:
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


# Fetches chunks by hash, several in one call (the pieces of a tail): one store round
# trip. `ahead` names chunks a sequential reader will want next: the fetcher may bring
# them in the same round trip, if it makes one anyway, and keep them for later.
Fetch = Callable[..., Awaitable[list[bytes]]]
# A sequential read that has to go to the store brings the next 512 KiB with it: on a
# cold cache, reading a large file then costs one round trip per 640 KiB instead of
# one per 128 KiB read.
READAHEAD_CHUNKS = 8


class FileBuffer:
    """The contents of one open file: committed chunks plus the chunks changed since.

    Invariant: len(chunks) == chunk_count(size), and for every index either
    `dirty[index]` holds exactly chunk_length(index, size) bytes, or `chunks[index]`
    refers to stored bytes of exactly that length (a hash, or the pieces of the tail;
    `None` only where dirty). Writes and truncates load the chunks they touch into
    `dirty`, so `commit()` only hashes what changed.

    While only `append()` changed it since the content it was loaded from or last
    committed (`base`, of `base_size` bytes), the buffer is that content plus appended
    bytes, and `rebase()` can move those bytes after another version of the file.
    """

    def __init__(self, chunks: list[bytes] | bytes, size: int, fetch: Fetch):
        flat = unpack(chunks) if isinstance(chunks, bytes) else list(chunks)
        self.chunks: list[ChunkRef | None] = refs_of(flat, size)
        self.size = size
        self._stored_pieces = self._tail_pieces()
        self.dirty: dict[int, bytearray] = {}
        self._fetch = fetch
        self.changed = False
        # Counts changes, so a commit can tell whether writes came in while it was stored.
        self.generation = 0
        self._read_end = 0   # where the last read ended: the next one there is sequential
        self.base_size = size
        self.base = content_digest(size, flat)
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
        if buf is None:
            buf = bytearray(await self._chunk(self.chunks[index]))
            self.dirty[index] = buf
        return buf

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        indexes = range(offset // CHUNK_SIZE, chunk_count(end))
        ahead = self._ahead_of(indexes.stop) if offset == self._read_end else []
        self._read_end = end
        stored = await self._chunks_of([i for i in indexes if i not in self.dirty], ahead)
        parts = []
        for index in indexes:
            base = index * CHUNK_SIZE
            data = self.dirty[index] if index in self.dirty else stored[index]
            parts.append(bytes(data[max(offset - base, 0):end - base]))
        return b"".join(parts)

    def _ahead_of(self, start: int) -> list[bytes]:
        """The stored chunks after `start` that a sequential reader reads next."""
        stop = min(start + READAHEAD_CHUNKS, len(self.chunks))
        return [digest for i in range(start, stop) if i not in self.dirty
                for digest in self._hashes_of(i) if digest != ZERO_CHUNK_HASH]

    async def _chunks_of(self, indexes: list[int], ahead: list[bytes] = ()) -> dict[int, bytes]:
        """The stored bytes of these chunks, fetched in one call (a read of 128 KiB
        spans two or three chunks; on a cold cache each fetch is a store round trip)."""
        wanted = [digest for i in indexes for digest in self._hashes_of(i) if digest != ZERO_CHUNK_HASH]
        fetched = {ZERO_CHUNK_HASH: ZERO_CHUNK}
        if wanted:
            fetched.update(zip(wanted, await (self._fetch(wanted, ahead) if ahead else self._fetch(wanted))))
        return {i: b"".join(fetched[digest] for digest in self._hashes_of(i)) for i in indexes}

    def _hashes_of(self, index: int) -> tuple[bytes, ...]:
        ref = self.chunks[index]
        return ref if isinstance(ref, tuple) else (ref,)

    async def write(self, offset: int, data: bytes) -> None:
        self.appends_only = False
        await self._write(offset, data)

    async def append(self, data: bytes) -> None:
        """Write at the end of the buffer (O_APPEND). The kernel holds the inode's lock
        across a write request, so two appends to one file never interleave."""
        await self._write(self.size, data)

    async def rebase(self, chunks: bytes, size: int) -> None:
        """Put what was appended since `base` after the content `chunks` of `size` bytes
        instead: another writer's version of the file was stored in between. Nothing
        changes if the buffer was changed otherwise meanwhile (it then stores it all)."""
        while True:
            if not self.appends_only:
                return
            generation = self.generation
            appended = await self.read(self.base_size, self.size - self.base_size)
            fresh = FileBuffer(chunks, size, self._fetch)
            await fresh._write(size, appended)
            if generation == self.generation:
                break   # (else more was appended meanwhile: take it too)
        self.chunks, self.size, self.dirty = fresh.chunks, fresh.size, fresh.dirty
        self._stored_pieces = fresh._stored_pieces
        self.base_size, self.base = size, fresh.base
        self.changed = True
        self.generation += 1

    async def _write(self, offset: int, data: bytes) -> None:
        if not data:
            return
        end = offset + len(data)
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

    async def truncate(self, size: int) -> None:
        self.appends_only = False
        await self._resize(size)

    async def _resize(self, size: int) -> None:
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
        # The pieces of the committed tail are stored: an append re-stores only the
        # piece it changed.
        return Pending(stored, new, self.size, self.generation, self._stored_pieces,
                       self.base if self.appends_only and self.changed else None)

    def _tail_pieces(self) -> frozenset:
        last = self.chunks[-1] if self.chunks else None
        return frozenset(last) if isinstance(last, tuple) else frozenset()

    def mark_committed(self, pending: "Pending") -> None:
        """The commit of `pending` is durable: forget the dirty chunks it covered.

        If the buffer changed since the snapshot, it stays dirty for the next commit;
        if only by appends, they were made on what was stored, the new base.
        """
        if pending.generation == self.generation:
            self.chunks = list(pending.refs)
            self._stored_pieces = self._tail_pieces()
            self.dirty.clear()
            self.changed = False
            self.appends_only = True
        if self.appends_only:
            self.base_size, self.base = pending.size, content_digest(pending.size, pending.hashes)

    def dirty_bytes(self) -> int:
        return sum(len(buf) for buf in self.dirty.values())


class Pending:
    """A snapshot of a buffer on its way to the store."""

    def __init__(self, stored: list[ChunkRef | None], new: dict[int, bytes], size: int, generation: int,
                 known: frozenset = frozenset(), base: bytes | None = None):
        self.stored = stored        # reference per chunk index, None where the chunk is new
        self.new = new              # the new chunks' bytes, by index
        self.size = size
        self.generation = generation
        self.known = known          # pieces already in the store
        self.base = base            # appends only: the digest of the content they were made on
        self.refs: list[ChunkRef] = []
        self.hashes: list[bytes] = []   # flat, as events carry them
        self.chunks: dict[bytes, bytes] = {}

    def seal(self) -> "Pending":
        """Hash the new chunks (pure CPU; large ones are sealed in a worker thread)."""
        for index, ref in enumerate(self.stored):
            if ref is None:
                ref = seal_chunk(self.new[index], self.chunks, self.known)
            elif ref == ZERO_CHUNK_HASH:
                self.chunks[ref] = ZERO_CHUNK
            self.refs.append(ref)
        self.hashes = flatten(self.refs)
        return self
