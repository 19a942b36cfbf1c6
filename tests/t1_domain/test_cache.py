"""The L1 chunk cache stays within its byte bound, whatever is put in it."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lighthousefs.domain.chunks import chunk_hash
from lighthousefs.files.chunk_cache import ChunkCache

chunk_data = st.binary(min_size=0, max_size=5000)


@settings(max_examples=300, deadline=None)
@given(max_bytes=st.integers(1, 20000),
       steps=st.lists(st.one_of(st.tuples(st.just("put"), chunk_data),
                                st.tuples(st.just("fresh"), st.lists(chunk_data, max_size=5)),
                                st.tuples(st.just("get"), st.integers(0, 50))), max_size=60))
def test_bytes_never_exceed_the_bound_and_hits_are_exact(max_bytes, steps):
    counts = {"hit": 0, "miss": 0}
    cache = ChunkCache(max_bytes, on_hit=lambda: counts.__setitem__("hit", counts["hit"] + 1),
                       on_miss=lambda: counts.__setitem__("miss", counts["miss"] + 1))
    seen: list[tuple[bytes, bytes]] = []
    gets = hits = 0
    for step in steps:
        if step[0] == "put":
            digest = chunk_hash(step[1])
            cache.put(digest, step[1])
            seen.append((digest, step[1]))
            if len(step[1]) <= max_bytes:
                assert cache.get(digest) == step[1]     # just put: present
                gets += 1
                hits += 1
        elif step[0] == "fresh":
            chunks = {chunk_hash(d): d for d in step[1]}
            cache.put_fresh(chunks)
            seen.extend(chunks.items())
        elif seen:
            digest, data = seen[step[1] % len(seen)]
            got = cache.get(digest)
            assert got in (None, data)                  # never a wrong chunk
            gets += 1
            hits += got is not None
        assert 0 <= cache.bytes <= max_bytes
    assert counts == {"hit": hits, "miss": gets - hits}


def test_most_recently_used_survives():
    cache = ChunkCache(30)
    for name in (b"a", b"b", b"c"):
        cache.put(name, b"x" * 10)
    cache.get(b"a")
    cache.put(b"d", b"y" * 10)          # evicts b, the least recently used
    assert cache.get(b"a") and cache.get(b"b") is None and cache.get(b"d")
