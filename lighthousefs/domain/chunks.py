"""File contents as content-addressed chunks (the buffer of an open file is files/buffer.py).

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
