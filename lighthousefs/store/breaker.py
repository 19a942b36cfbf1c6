"""A circuit breaker for blocking remote calls made from trio.

    breaker = Breaker("store", failure_threshold=5, reset_timeout=10.0, call_timeout=5.0)
    events = await breaker.call(store.read, after_seq, 1000)

Closed: calls run; `failure_threshold` consecutive failures open the circuit.
Open: calls fail at once with StoreUnavailable("circuit open: <last cause>"), so a sick
Redis costs nothing but an exception, until `reset_timeout` has passed on trio's clock.
Half-open: the first call after that runs as the probe while others still fail fast;
its success closes the circuit, its failure opens it again for another reset_timeout.

What counts as a failure: only the store's own, StoreUnavailable (the stores turn
connection errors and the like into it) and a timeout. Domain errors (NotFound,
ChunkMissing, ...) are answers from a healthy backend: they pass through and count as
successes. Any other exception is a bug or bad input, not the store's failure: it passes
through (the caller logs it with its traceback and answers EIO) and counts neither way,
so no caller can open the circuit for everyone by sending what the code cannot handle.

Concurrency: all state lives on the trio thread and changes only between awaits; no
lock is taken, so none is ever held across an await. A call's outcome counts only for
the state it started in (`_generation`): a slow call that began while closed cannot
close a circuit that opened meanwhile. Design after pybreaker (states as small
classes, listeners for metrics), but on trio's clock and without its held lock.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, TypeVar

import trio

from .. import errors

log = logging.getLogger(__name__)

T = TypeVar("T")
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
StateListener = Callable[[str, str], None]


@dataclasses.dataclass(frozen=True)
class BreakerStatistics:
    name: str
    state: str
    consecutive_failures: int
    last_failure: str | None
    opened_at: float | None      # trio time of the last opening, if open or half-open
    calls: int                   # calls that ran (reached fn)
    successes: int
    failures: int
    timeouts: int                # failures that were timeouts (also in `failures`)
    rejected: int                # calls refused while open or while the probe ran
    state_changes: int


class _Closed:
    name = CLOSED

    def __init__(self):
        self.failures = 0


class _Open:
    name = OPEN

    def __init__(self, opened_at: float):
        self.opened_at = opened_at


class _HalfOpen:
    name = HALF_OPEN

    def __init__(self, opened_at: float):
        self.opened_at = opened_at
        self.probe_running = False


def _default_is_failure(exc: BaseException) -> bool:
    return isinstance(exc, errors.StoreUnavailable)


class Breaker:
    """One breaker per remote dependency (the store, the L3 cache, ...).

    `limiter` bounds the worker threads its calls use (default: a private limiter of
    `max_threads`). With `call_timeout`, a call that takes longer fails with
    StoreUnavailable and its thread is abandoned (threads cannot be cancelled): it
    keeps its limiter token until it returns, so a hung backend cannot pile up threads
    beyond the limit. Give blocking clients their own socket timeouts as well.
    """

    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout: float = 10.0,
                 call_timeout: float | None = None, limiter: trio.CapacityLimiter | None = None,
                 max_threads: int = 4, is_failure: Callable[[BaseException], bool] = _default_is_failure):
        if failure_threshold < 1 or reset_timeout < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.call_timeout = call_timeout
        self.limiter = limiter or trio.CapacityLimiter(max_threads)
        self.is_failure = is_failure
        self._state: _Closed | _Open | _HalfOpen = _Closed()
        self._generation = 0
        self._listeners: list[StateListener] = []
        self._last_failure: str | None = None
        self._counts = dict(calls=0, successes=0, failures=0, timeouts=0, rejected=0, state_changes=0)

    # ---- observing -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """closed, open or half-open. An open circuit turns half-open at the next call."""
        return self._state.name

    def on_state_change(self, listener: StateListener) -> StateListener:
        """Call listener(old, new) on the trio thread at every change; usable as decorator."""
        self._listeners.append(listener)
        return listener

    def statistics(self) -> BreakerStatistics:
        st = self._state
        return BreakerStatistics(
            name=self.name, state=st.name,
            consecutive_failures=st.failures if isinstance(st, _Closed) else 0,
            last_failure=self._last_failure,
            opened_at=getattr(st, "opened_at", None),
            **self._counts)

    # ---- calling ---------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args, patient: bool = False, waits: float = 0.0,
                   limiter: trio.CapacityLimiter | None = None) -> T:
        """Run blocking fn(*args) in a worker thread, guarded by the breaker.

        Raises StoreUnavailable without calling fn while the circuit is open (or its
        probe is running); otherwise returns fn's result or raises fn's exception, a
        timeout becoming StoreUnavailable. Cancellation of the caller leaves the state
        as it was (the abandoned call counts as neither success nor failure).

        `patient`: no call_timeout, the call is waited for. For calls whose outcome must
        be known (an append): an abandoned one may still succeed after its caller was
        told it failed. Such a call must bound its own time (see RedisStore.append).

        `waits`: the call blocks this long by design (the follower's wait for events):
        its call_timeout starts after it. `limiter`: the call's threads come from this
        one instead of the breaker's (a heartbeat must not queue behind slow calls).
        """
        generation = self._admit()  # no await before this: admission is atomic
        probe = isinstance(self._state, _HalfOpen)
        self._counts["calls"] += 1
        try:
            with trio.fail_after(math.inf if self.call_timeout is None or patient else self.call_timeout + waits):
                result = await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.limiter,
                                                       abandon_on_cancel=True)
        except trio.TooSlowError:
            cause = f"{self.name}: no answer within {self.call_timeout + waits:g} s"
            self._counts["timeouts"] += 1
            self._record_failure(generation, cause)
            raise errors.StoreUnavailable(cause) from None
        except Exception as exc:
            if self.is_failure(exc):
                self._record_failure(generation, str(exc) or type(exc).__name__)
            elif isinstance(exc, errors.LighthouseError):
                self._record_success(generation)
            else:
                self._release_probe(probe, generation)   # a bug or bad input: neither way
            raise
        except BaseException:
            self._release_probe(probe, generation)
            raise
        self._record_success(generation)
        return result

    def _release_probe(self, probe: bool, generation: int) -> None:
        """A probe whose call told nothing about the store lets the next caller probe."""
        if probe and generation == self._generation:
            self._state.probe_running = False

    def _admit(self) -> int:
        st = self._state
        if isinstance(st, _Open):
            if trio.current_time() < st.opened_at + self.reset_timeout:
                self._reject()
            self._set(_HalfOpen(st.opened_at))
            st = self._state
        if isinstance(st, _HalfOpen):
            if st.probe_running:
                self._reject()
            st.probe_running = True
        return self._generation

    def _reject(self) -> None:
        self._counts["rejected"] += 1
        raise errors.StoreUnavailable(f"circuit open: {self._last_failure}")

    def _record_success(self, generation: int) -> None:
        self._counts["successes"] += 1
        if generation != self._generation:
            return
        if isinstance(self._state, _HalfOpen):
            self._set(_Closed())
        elif isinstance(self._state, _Closed):
            self._state.failures = 0

    def _record_failure(self, generation: int, cause: str) -> None:
        self._counts["failures"] += 1
        self._last_failure = cause
        if generation != self._generation:
            return
        st = self._state
        if isinstance(st, _HalfOpen):
            self._set(_Open(trio.current_time()))
        elif isinstance(st, _Closed):
            st.failures += 1
            if st.failures >= self.failure_threshold:
                log.warning("%s: circuit opens after %d failures: %s", self.name, st.failures, cause)
                self._set(_Open(trio.current_time()))

    def reset(self) -> None:
        """Close the circuit now (an operator's override)."""
        if not isinstance(self._state, _Closed):
            self._set(_Closed())

    def _set(self, new) -> None:
        old = self._state.name
        self._state = new
        self._generation += 1
        self._counts["state_changes"] += 1
        for listener in list(self._listeners):
            try:
                listener(old, new.name)
            except Exception:
                log.exception("%s: state listener %r failed", self.name, listener)
