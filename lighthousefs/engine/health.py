"""Is this mount healthy? One report for `.lighthouse/health`, /healthz and /readyz.

The report is computed on the trio thread by `Monitor.report()` (from the breaker, the
journal's failsafe, a probe of the store's last seq once a second, and the tree's applied
seq) and published as a frozen `Health`, replaced whole: the metrics server's HTTP
thread reads only `Monitor.current`, never a trio object. It is published every
PROBE_EVERY_S, at every breaker change and whenever the control file is read.

status: "ok" only when a write would succeed now; "failing" when writes fail (the store
does not answer, its circuit is not closed, it lost data: failsafe, or the last write
failed: until a write succeeds, probed by a write that changes nothing); "degraded" when
writes succeed but something is wrong (the store is full, or this mount lags behind it).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time

import trio

from .. import errors
from .journal import Journal

log = logging.getLogger(__name__)

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0
# Not ready while the newest state of the store this mount is known to have applied is
# older than this (the follower is stuck or far behind).
MAX_LAG_S = 10.0
# /healthz: the trio loop published a report within this (else it is hung).
LIVE_WITHIN_S = 30.0


@dataclasses.dataclass(frozen=True)
class Health:
    status: str                  # ok, degraded, failing
    reason: str | None
    store_answers: bool
    breaker: str                 # closed, open, half-open
    failsafe: str | None         # why the store is no longer trusted, once it lost data
    store_full: str | None
    applied_seq: int
    store_seq: int | None        # the store's last seq at the last probe that answered
    lag_events: int
    lag_s: float                 # age of the newest store state known applied here
    published: float = dataclasses.field(default=0.0, compare=False)   # time.monotonic()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["published"]
        d["lag_s"] = round(self.lag_s, 3)
        return d

    def live(self) -> bool:
        """Did the trio loop publish this recently (read from any thread)?"""
        return time.monotonic() - self.published < LIVE_WITHIN_S


class Monitor:
    def __init__(self, journal: Journal):
        self.journal = journal
        self._limiter = trio.CapacityLimiter(1)
        self._answers = True            # the store was just opened
        self._problem: str | None = None
        # The store's last seq at recent probes, with when each was asked: under a steady
        # stream of others' events the newest is seldom applied yet, an older one is.
        self._probes: collections.deque[tuple[int, float]] = collections.deque(maxlen=int(2 * MAX_LAG_S))
        self._caught_up_at = time.monotonic()
        self.current: Health = self.report()

    def report(self) -> Health:
        """Compute the report now (trio thread), publish it and return it."""
        journal, now = self.journal, time.monotonic()
        applied = journal.tree.applied_seq
        breaker = journal.breaker.state if journal.breaker is not None else "closed"
        for seq, asked in self._probes:   # all the store held when asked is applied here
            if applied >= seq:
                self._caught_up_at = max(self._caught_up_at, asked)
        store_seq = self._probes[-1][0] if self._probes else None
        lag = max(0, (store_seq or 0) - applied)
        lag_s = max(0.0, now - self._caught_up_at) if lag else 0.0
        full = journal.store.full
        if journal.failsafe:
            status, reason = "failing", f"the store lost data this mount had seen: {journal.failsafe}"
        elif not self._answers:
            status, reason = "failing", f"the store does not answer: {self._problem}"
        elif breaker != "closed":
            last = journal.breaker.statistics().last_failure
            status, reason = "failing", f"the store's circuit is {breaker}: {last}"
        elif journal.guarded.write_failure:
            status, reason = "failing", f"the last write failed: {journal.guarded.write_failure}"
        elif not journal.store_reachable():
            status, reason = "failing", "the store has not answered lately"
        elif full:
            status, reason = "degraded", f"the store takes no new content: {full}"
        elif lag_s > MAX_LAG_S:
            status, reason = "degraded", f"{lag} events behind the store for {lag_s:.0f} s"
        else:
            status, reason = "ok", None
        health = Health(status, reason, self._answers, breaker, journal.failsafe, full, applied,
                        store_seq, lag, lag_s, published=now)
        self.current = health   # one reference assignment: atomic for the HTTP thread
        return health

    def on_breaker_change(self, old: str, new: str) -> None:
        self.report()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Probe the store and publish a report every PROBE_EVERY_S."""
        task_status.started()
        while True:
            await self._probe()
            if self.journal.guarded.write_failure and self._answers:
                await self._probe_write()
            self.report()
            await trio.sleep(PROBE_EVERY_S)

    async def _probe(self) -> None:
        """Ask the store its last seq, in a thread of its own (not behind the breaker:
        a probe of a sick store must not be refused by the circuit, nor open it)."""
        asked = time.monotonic()
        problem = None
        with trio.move_on_after(PROBE_TIMEOUT_S) as scope:
            try:
                seq = await trio.to_thread.run_sync(self.journal.store.last_seq, limiter=self._limiter,
                                                    abandon_on_cancel=True)
            except errors.LighthouseError as exc:
                problem = str(exc) or type(exc).__name__
        if scope.cancelled_caught:
            problem = f"no answer within {PROBE_TIMEOUT_S:g} s"
        if problem is None:
            self._probes.append((seq, asked))
        if (problem is None) != self._answers:
            log.info("health: the store %s", "answers again" if problem is None else f"does not answer: {problem}")
        self._answers, self._problem = problem is None, problem


    async def _probe_write(self) -> None:
        """While the last write failed, a write that changes nothing: the status stays
        failing until one succeeds, and it would stay so for good on a mount that writes
        nothing. Through the breaker (a write's failure is the store's: it counts), so
        while the circuit is open it costs nothing."""
        with trio.move_on_after(PROBE_TIMEOUT_S):
            try:
                await self.journal.guarded.probe_write(limiter=self._limiter)
            except errors.LighthouseError:
                pass   # the guarded store keeps why


def http_routes(monitor: Monitor) -> dict:
    """/healthz (liveness: the daemon's loop publishes reports) and /readyz (readiness:
    the report says ok), for the metrics server's thread: they read only the published
    report. 200 or 503, with the report as JSON."""

    def answer(health: Health, ok: bool) -> tuple[int, bytes]:
        report = health.as_dict()
        if not health.live():
            report.update(status="failing", reason=f"the daemon's loop has not reported for "
                                                    f"{time.monotonic() - health.published:.0f} s")
        return (200 if ok else 503), json.dumps(report).encode() + b"\n"

    def healthz():
        health = monitor.current
        return answer(health, health.live())

    def readyz():
        health = monitor.current
        return answer(health, health.live() and health.ok)

    return {"/healthz": healthz, "/readyz": readyz}
