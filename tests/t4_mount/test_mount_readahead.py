"""A sequential read on a cold L1 brings the next chunks with the ones it needs, so a
large file costs a few store round trips, not one per kernel read."""
from __future__ import annotations

import re

import pytest

from tests.harness.mounts import lighthouse

pytestmark = pytest.mark.mount


def l1(m, result: str) -> float:
    stats = (m / ".lighthouse" / "stats").read_text()
    found = re.search(r'lighthousefs_cache_requests_total\{result="%s",tier="l1"\} (\S+)' % result, stats)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("cache_mb", ["64", "0"])
def test_a_cold_sequential_read_misses_l1_only_where_it_has_to(mounter, cache_mb):
    m = mounter("a")
    (m / "projects" / "p").mkdir()
    data = bytes(i % 251 for i in range(4 << 20))                    # 64 distinct chunks
    (m / "projects" / "p" / "big").write_bytes(data)
    lighthouse("umount", str(m.path))
    cold = mounter("a", "--cache-mb", cache_mb)                      # an empty L1
    before = l1(cold, "miss")
    assert (cold / "projects" / "p" / "big").read_bytes() == data
    misses = l1(cold, "miss") - before
    # 64 chunks: every one misses without readahead (measured: about 20 with it; the
    # kernel's own readahead interleaves its reads). None without an L1 large enough
    # to keep what it brings.
    if cache_mb == "0":
        assert misses >= 64
    else:
        assert misses <= 32, misses
