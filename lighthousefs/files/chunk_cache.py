"""L1: the in-process cache of file chunks, bounded in bytes.

Chunks are named by the hash of their bytes, so an entry can never be stale: nothing
is invalidated, the least recently used chunks are simply evicted. cachetools is not
thread-safe; this cache lives on the trio thread only.
"""
from __future__ import annotations

from typing import Callable

from cachetools import LRUCache


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
