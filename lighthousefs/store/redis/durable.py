"""How durable an append is: Redis acknowledges an append once it executed it, which is
durable only as far as Redis persists it. Run Redis with `appendonly yes` and
`appendfsync always` (nothing acknowledged is lost) or `everysec` (up to a second is lost
on a crash of the host); the URL's `waitaof=1` makes everysec as safe as always for our
appends, and `wait_replicas=N` waits for replicas (url.py)."""
from __future__ import annotations

import logging
from typing import Callable

import redis.exceptions

from .answers import REDIS_ERRORS

log = logging.getLogger(__name__)


class DurableWait:
    """WAIT / WAITAOF after an append, as the URL asks. Thread-safe enough: the one
    field that changes (WAITAOF is unknown to this Redis) only ever goes one way."""

    def __init__(self, client, target: Callable[[], dict], url: str, *, replicas: int, waitaof: bool, timeout_ms: int):
        self._r = client
        self._target = target   # {} or, on a Cluster, the node holding the namespace now
        self._url = url
        self._replicas = replicas
        self._waitaof = waitaof
        self._timeout_ms = timeout_ms
        self._warned = False

    def wait(self) -> None:
        """The events are stored on the primary by now, so a shortfall is logged, not
        raised (the contract: raise only if nothing stored)."""
        if not (self._replicas or self._waitaof):
            return
        try:
            if self._waitaof:
                try:
                    local, replicas = self._r.execute_command(
                        "WAITAOF", 1, self._replicas, self._timeout_ms, **self._target())
                except redis.exceptions.ResponseError as exc:
                    if "unknown command" not in str(exc).lower():
                        raise
                    if not self._warned:
                        self._warned = True
                        log.warning("%s: WAITAOF needs Redis >= 7.2; relying on appendfsync", self._url)
                    self._waitaof = False
                    return self.wait()
                ok = int(local) >= 1 and int(replicas) >= self._replicas
            else:
                ok = int(self._r.execute_command(
                    "WAIT", self._replicas, self._timeout_ms, **self._target())) >= self._replicas
        except REDIS_ERRORS as exc:
            log.warning("%s: appended, but WAIT/WAITAOF failed: %s", self._url, exc)
            return
        if not ok:
            log.warning("%s: appended, but not confirmed on disk/replicas within %d ms", self._url, self._timeout_ms)
