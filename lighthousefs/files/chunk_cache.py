"""L1: the in-process cache of file chunks, bounded in bytes.

Chunks are named by the hash of their bytes, so an entry can never be stale: nothing
is invalidated, the least recently used chunks are simply evicted. cachetools is not
thread-safe; this cache lives on the trio thread only.

`Chunks` is how open files reach their chunks: L1 first, what it lacks from the store
in one call, with readahead; and full chunks stored ahead of the event that names them.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from cachetools import LRUCache

from .. import errors
from ..domain.chunks import seal_full
from ..store import report_corrupt
from ..store.base import Store

# Readahead only where L1 keeps what it brings until it is read (--cache-mb 0: never).
READAHEAD_MIN_CACHE_BYTES = 8 << 20


class ChunkCache:
    def __init__(self, max_bytes: int, on_hit: Callable[[], None] = lambda: None,
                 on_miss: Callable[[], None] = lambda: None):
        self._lru: LRUCache[bytes, bytes] = LRUCache(max_bytes, getsizeof=len)
        self._on_hit = on_hit
        self._on_miss = on_miss

    @property
    def max_bytes(self) -> int:
        return self._lru.maxsize

    @property
    def bytes(self) -> int:
        return self._lru.currsize

    def get(self, digest: bytes) -> bytes | None:
        data = self._lru.get(digest)
        (self._on_miss if data is None else self._on_hit)()
        return data

    def holds(self, digest: bytes) -> bool:
        """Is the chunk here? Neither a hit nor a miss (readahead asks, no reader)."""
        return digest in self._lru

    def put(self, digest: bytes, data: bytes) -> None:
        if len(data) <= self._lru.maxsize:     # a chunk larger than the cache is not kept
            self._lru[digest] = data

    def put_fresh(self, chunks: dict[bytes, bytes]) -> None:
        """Keep chunks just written (read next, and readable while the store is away),
        unless they would push out more than a quarter of the cache."""
        if sum(map(len, chunks.values())) <= self._lru.maxsize // 4:
            for digest, data in chunks.items():
                self.put(digest, data)


class Chunks:
    """L1 in front of the store. `call_store(fn, *args, **how)` runs a store call in a
    worker thread (engine/journal.py); `path_of(ino)` names a file in a log line."""

    def __init__(self, cache: ChunkCache, store: Store, call_store: Callable[..., Awaitable],
                 path_of: Callable[[int], str]):
        self.cache = cache
        self.store = store
        self._call_store = call_store
        self._path_of = path_of

    async def fetch(self, digests: list[bytes], ahead: list[bytes] = (), *, ino: int = 0) -> list[bytes]:
        """Chunks from L1, and what L1 lacks from the store in one call. If that call is
        made, the `ahead` chunks L1 lacks come with it (readahead; see buffer.py), when
        L1 is large enough to keep them until they are read. A damaged chunk is logged
        naming the file `ino`; one met only ahead does not fail this read."""
        found = [self.cache.get(digest) for digest in digests]
        missing = [digest for digest, data in zip(digests, found) if data is None]
        if missing:
            needed = len(missing)
            if ahead and self.cache.max_bytes >= READAHEAD_MIN_CACHE_BYTES:
                wanted = set(missing)
                missing += [d for d in dict.fromkeys(ahead) if d not in wanted and not self.cache.holds(d)]
            try:
                fetched = dict(zip(missing, await self._call_store(self.store.get_chunks, missing)))
            except (errors.ChunkCorrupt, errors.ChunkMissing) as exc:
                if isinstance(exc, errors.ChunkCorrupt):
                    report_corrupt(exc, lambda: self._path_of(ino) if ino else "a file")
                if not set(exc.digests) & set(missing[:needed]):
                    return await self.fetch(digests, ino=ino)   # only ahead: read without
                raise
            for digest, data in fetched.items():
                self.cache.put(digest, data)
            found = [fetched[digest] if data is None else data for digest, data in zip(digests, found)]
        return found

    async def put(self, datas: list) -> list[bytes | None]:
        """Full chunks of an open file, hashed and stored in a worker thread before the
        event that names them (see buffer.py): their hashes (None for zeros)."""
        def put():
            hashes, chunks = seal_full(datas)
            self.store.append([], chunks, False)   # durable with the event at close
            return hashes
        # Not kept in L1: a large file streams past, and would push out what is read.
        # Patient, as appends are: a slow store makes the write wait, never fail while
        # the chunks are still being stored (content-addressed: harmless either way).
        return await self._call_store(put, write=True, stores=True, patient=True)
