"""A file's content read from a store by its chunk list, and the chunk list of that
content with bytes appended: for producers without a mount (the API). Blocking; the
mount has its own (files/buffer.py, with a cache and readahead)."""
from __future__ import annotations

from ..domain import chunks
from .base import Store


def read(store: Store, size: int, packed: bytes) -> bytes:
    """The bytes of a file of `size` with the (packed) chunk list `packed`."""
    refs = chunks.refs_of(packed, size)   # holes are absent
    digests = [h for ref in refs.values() for h in chunks.hashes_of(ref)]
    stored = dict(zip(digests, store.get_chunks(digests)))
    return b"".join(_chunk(refs, i, size, stored) for i in range(chunks.chunk_count(size)))


def appended(store: Store, size: int, packed: bytes, data: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    """The chunk list of that file's content followed by `data`, and the chunks to store:
    the full chunks stay as they are, only a partial last one is read."""
    refs = chunks.refs_of(packed, size)
    full = size // chunks.CHUNK_SIZE
    kept = {i: ref for i, ref in refs.items() if i < full}
    tail = b""
    if size % chunks.CHUNK_SIZE:
        digests = list(chunks.hashes_of(refs[full])) if full in refs else []
        tail = _chunk(refs, full, size, dict(zip(digests, store.get_chunks(digests))))
    rest, new_chunks = tail + data, {}
    for k, start in enumerate(range(0, len(rest), chunks.CHUNK_SIZE)):
        piece = rest[start:start + chunks.CHUNK_SIZE]
        if not chunks.is_zeros(piece):
            kept[full + k] = chunks.seal_chunk(piece, new_chunks)
    return chunks.flat_list(kept, size + len(data)), new_chunks


def _chunk(refs: dict, index: int, size: int, stored: dict[bytes, bytes]) -> bytes:
    if index not in refs:
        return bytes(chunks.chunk_length(index, size))   # a hole
    return b"".join(stored[h] for h in chunks.hashes_of(refs[index]))
