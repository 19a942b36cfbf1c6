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

Holes cost nothing: a run of chunks that are all zeros (a sparse file's hole, or zeros
written) is one entry of the list, HOLE_PREFIX and the run's length, whatever its size;
lists stored before holes existed name zero chunks by ZERO_CHUNK_HASH and read as
before. The buffer of an open file keeps only the chunks it has (by index), so a
truncate or a write far past the end is O(1); and full chunks leave it for the store
as it is written (spill), so writing a large file keeps a few MiB in memory.
"""
from __future__ import annotations

import hashlib
from typing import Awaitable, Callable

from . import errors

CHUNK_SIZE = 64 * 1024
PIECE_SIZE = 4 * 1024
ZERO_CHUNK = bytes(CHUNK_SIZE)


HASH_SIZE = 20
# A hole entry: these 12 bytes, then the number of chunks (8 bytes, big-endian). A
# hash begins with them with a probability of 2**-96.
HOLE_PREFIX = b"\0lighthouse\0"
# The largest file, as on ext4 (4 KiB blocks): 16 TiB less one block. Larger sizes
# get EFBIG.
MAX_FILE_SIZE = ((1 << 32) - 1) * 4096
# A write finding more dirty chunks than this sends the full ones to the store first:
# an open file keeps at most about 4 MiB of written bytes.
SPILL_CHUNKS = 64

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
    """The flat chunk list of `data` (chunks of zeros are holes), and the chunks by hash."""
    chunks: dict[bytes, bytes] = {}
    refs = {}
    for index, start in enumerate(range(0, len(data), CHUNK_SIZE)):
        if not is_zeros(piece := data[start:start + CHUNK_SIZE]):
            refs[index] = seal_chunk(piece, chunks)
    return flat_list(refs, len(data)), chunks


def hole(count: int) -> bytes:
    """The flat-list entry for `count` chunks of zeros."""
    return HOLE_PREFIX + count.to_bytes(8, "big")


def hole_length(entry: bytes) -> int:
    """How many chunks a hole entry stands for; 0 for a hash."""
    return int.from_bytes(entry[len(HOLE_PREFIX):], "big") if entry.startswith(HOLE_PREFIX) else 0


def is_zeros(data) -> bool:
    return data.count(0) == len(data)


def hashes_of(ref: ChunkRef) -> tuple[bytes, ...]:
    return ref if isinstance(ref, tuple) else (ref,)


def flat_list(refs: dict[int, ChunkRef], size: int) -> list[bytes]:
    """The flat list (as events carry it) of a file's stored chunks by index: the
    indexes missing from `refs` are holes, one entry per run."""
    count = chunk_count(size)
    if len(refs) == count:   # no holes: in order without a sort
        out = [refs[i] for i in range(count - 1)]
        return out + list(hashes_of(refs[count - 1])) if count else out
    out = []
    expected = 0
    for index in sorted(refs):
        if index > expected:
            out.append(hole(index - expected))
        out.extend(hashes_of(refs[index]))
        expected = index + 1
    if count > expected:
        out.append(hole(count - expected))
    return out


def refs_of(hashes: list[bytes] | bytes, size: int) -> dict[int, ChunkRef]:
    """The stored chunks of a flat list (or its packed form) by index (holes and zero
    chunks left out): the pieces of the tail become a tuple. Lists of any layout stored
    so far are read."""
    packed = hashes if isinstance(hashes, bytes) else pack(hashes)
    hashes = unpack(packed)
    full, count = size // CHUNK_SIZE, chunk_count(size)
    if HOLE_PREFIX not in packed:
        # No holes (the common case, found in C): a list of 10 GiB is read in
        # milliseconds, not in a Python loop of 160k steps on the trio thread.
        if len(hashes) == count:
            refs = dict(enumerate(hashes))
        elif size % CHUNK_SIZE and len(hashes) == full + -(-(size % CHUNK_SIZE) // PIECE_SIZE):
            refs = dict(enumerate(hashes[:full]))
            refs[full] = tuple(hashes[full:])
        else:
            raise ValueError(f"{len(hashes)} chunk hashes for a size of {size}")
        if ZERO_CHUNK_HASH in packed:   # stored before holes existed
            for index in [i for i, ref in refs.items() if ref == ZERO_CHUNK_HASH]:
                del refs[index]
        return refs
    refs = {}
    index = pos = 0
    while pos < len(hashes) and index < count:
        entry = hashes[pos]
        run = hole_length(entry)
        if run:
            index += run
            pos += 1
            continue
        if index == full and len(hashes) - pos > 1:   # the tail, as pieces
            pieces = hashes[pos:]
            if len(pieces) != -(-(size % CHUNK_SIZE) // PIECE_SIZE) or any(map(hole_length, pieces)):
                break
            refs[index] = tuple(pieces)
            index, pos = count, len(hashes)
            break
        if entry != ZERO_CHUNK_HASH:
            refs[index] = entry
        index += 1
        pos += 1
    if index != count or pos != len(hashes):
        raise ValueError(f"{len(hashes)} chunk list entries for a size of {size}")
    return refs


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_SIZE)


def chunk_length(index: int, size: int) -> int:
    return min(CHUNK_SIZE, size - index * CHUNK_SIZE)


def seal_full(datas: list) -> tuple[list[bytes | None], dict[bytes, bytes]]:
    """Hashes of full chunks written to an open file (None for zeros: a hole), and the
    chunks to store. Pure CPU, for a worker thread."""
    hashes: list[bytes | None] = []
    chunks: dict[bytes, bytes] = {}
    for data in datas:
        if is_zeros(data):
            hashes.append(None)
        else:
            data = bytes(data)
            hashes.append(chunk_hash(data))
            chunks[hashes[-1]] = data
    return hashes, chunks


# Fetches chunks by hash, several in one call (the pieces of a tail): one store round
# trip. `ahead` names chunks a sequential reader will want next: the fetcher may bring
# them in the same round trip, if it makes one anyway, and keep them for later.
Fetch = Callable[..., Awaitable[list[bytes]]]
# A sequential read that has to go to the store brings the next 512 KiB with it: on a
# cold cache, reading a large file then costs one round trip per 640 KiB instead of
# one per 128 KiB read.
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
