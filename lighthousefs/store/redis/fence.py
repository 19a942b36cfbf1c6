"""An append's deadline, in Redis's clock, and the outcome of an append whose answer
was lost: asked of Redis (FENCE), never guessed."""
from __future__ import annotations

import logging
import threading
import time

from ... import errors
from .answers import REDIS_ERRORS

log = logging.getLogger(__name__)

# An append Redis runs later than this (or twice the socket timeout, if more) after it
# was sent is refused (its deadline, in Redis's clock); one whose answer is lost is
# settled by asking Redis (see settle).
FENCE_S = 4.0
FENCE_MARGIN_S = 1.0
FENCE_RETRY_S = 0.2
NOT_STORED = {"late": "Redis ran it past its deadline",
              "unknown": "Redis did not answer within settle_timeout whether it ran it",
              "fenced": "its answer was lost, and it had not run; now it never will"}


class ServerClock:
    """An estimate of Redis's clock: appends carry a deadline in it. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        # (the server's clock in ms, our monotonic clock in s) when last learnt
        self._at = (0.0, time.monotonic())

    def learn(self, server_ms: float) -> None:
        """Redis's clock read `server_ms` during a short round trip that just ended. The
        estimate is behind by at most that round trip, never ahead: a deadline can come
        early (an append refused), never late (see settle)."""
        with self._lock:
            self._at = (server_ms, time.monotonic())

    def now_ms(self) -> float:
        with self._lock:
            server_ms, at = self._at
        return server_ms + (time.monotonic() - at) * 1000


def settle(fence, done_key: str, give_up: float, cause: errors.StoreUnavailable, url: str,
           settle_s: float) -> list[str]:
    """The outcome of an append whose answer was lost: the script may have run, may
    still be waiting in a frozen Redis, or may never arrive. Ask (the FENCE script)
    until Redis answers: it either had stored the events (their result) or has not, and
    then never will (its token is fenced; past its deadline Redis refuses the script
    anyway). Redis not answering by `give_up` (monotonic): the outcome is unknown
    (logged at ERROR), and the caller gets an error. Logged, with which it was."""
    while True:
        try:
            found = fence(keys=[done_key])
        except REDIS_ERRORS as exc:
            if time.monotonic() < give_up:
                time.sleep(FENCE_RETRY_S)
                continue
            log.error("append on %s: no answer (%s), nor since (%s) within %g s: whether it was "
                      "stored is unknown; answered as not stored", url, cause, exc, settle_s)
            return ["unknown"]
        found = found.decode() if isinstance(found, bytes) else found
        if found and found != "fenced":
            log.warning("append on %s: no answer (%s); Redis had stored it (seq %s)", url, cause, found.split()[0])
            return ["done", found]
        log.warning("append on %s: no answer (%s); Redis had not run it, and now never will: not stored",
                    url, cause)
        return ["fenced"]
