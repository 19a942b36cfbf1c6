"""The guarded store (store/guarded.py): every store call from trio passes the breaker,
the follower's blocking read included, and that read's wait is not slowness.

The engine driven in-process against a real redis-server, without a mount.
"""
from __future__ import annotations

import logging
import os
import uuid

import pytest
import trio

from lighthousefs.domain.tree import Tree
from lighthousefs.engine.journal import Journal
from lighthousefs.store.breaker import Breaker
from lighthousefs.store.redis import RedisStore
from tests.harness.redis_servers import REDIS_SERVER

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs redis-server"),
]


def store_on(server) -> RedisStore:
    return RedisStore(f"{server.url}?namespace={uuid.uuid4().hex[:12]}")


async def until(condition, what: str) -> None:
    """Poll until condition() holds; a bound only against a hang (not a timing claim)."""
    with trio.move_on_after(60):
        while not condition():
            await trio.sleep(0.02)
    assert condition(), what


@pytest.mark.expect_log("circuit opens after", "following the store failed; retrying")
def test_the_followers_blocking_read_on_a_dead_redis_is_counted_by_the_breaker(own_server, caplog):
    """Redis dies while the follower waits in it: that read's failure is the store's,
    and the breaker counts it (before, the follower's read went around the breaker,
    which learnt of a dead Redis only from other calls)."""
    store = store_on(own_server)
    breaker = Breaker("store", failure_threshold=1, reset_timeout=3600)
    journal = Journal(store, Tree(), "test", breaker=breaker)

    async def main():
        async with trio.open_nursery() as nursery:
            # A long retry pause: after its read fails, the follower asks nothing more.
            await nursery.start(journal.follow, 3600)
            await until(lambda: breaker.statistics().successes >= 1, "the follower's first read answered")
            own_server.kill()
            await until(lambda: "following the store failed" in caplog.text, "the follower's read failed")
            stats = breaker.statistics()
            assert stats.failures == 1 and stats.timeouts == 0, stats
            assert breaker.state == "open"
            assert not journal.store_reachable()
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    store.close()


def test_the_followers_wait_for_events_is_not_slowness(own_server):
    """With no events, the follower's read waits (a second) and answers "none": an
    answer, counted as a success, never a timeout, even with a call_timeout far shorter
    than the wait."""
    store = store_on(own_server)
    breaker = Breaker("store", failure_threshold=1, reset_timeout=3600, call_timeout=0.2)
    journal = Journal(store, Tree(), "test", breaker=breaker)

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.follow)
            # The catch-up at start, then two waits that ended with no events.
            await until(lambda: breaker.statistics().successes >= 3, "the follower's reads pass the breaker")
            stats = breaker.statistics()
            assert stats.failures == 0 and stats.timeouts == 0 and breaker.state == "closed", stats
            nursery.cancel_scope.cancel()

    trio.run(main)
    store.close()
