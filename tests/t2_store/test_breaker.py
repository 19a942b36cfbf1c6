"""The circuit breaker: a hypothesis state machine against a small model, and unit tests.

Time is trio's MockClock (rate 0), moved only by the tests: no sleeps, no timing.
"""
from __future__ import annotations

import errno
import threading

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lighthousefs import errors
from lighthousefs.store.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


def ok():
    return "ok"


def boom():
    raise errors.StoreUnavailable("boom")


def bug():
    raise OverflowError("int too big to convert")   # a bug or bad input, not the store's failure


def missing():
    raise errors.NotFound("no such file")


def lost():
    raise errors.ChunkMissing([b"\x01" * 20], "sqlite:///store.db")


OUTCOMES = {"ok": ok, "fail": boom, "bug": bug, "missing": missing, "lost": lost}


class Model:
    """What the breaker should do, sequential calls only."""

    def __init__(self, threshold: int, reset: float):
        self.threshold, self.reset = threshold, reset
        self.state, self.failures, self.opened_at = CLOSED, 0, 0.0
        self.transitions: list[tuple[str, str]] = []

    def _go(self, new: str) -> None:
        self.transitions.append((self.state, new))
        self.state = new

    def call(self, outcome: str, now: float) -> str:
        """'ran' or 'rejected'; updates the state."""
        if self.state == OPEN:
            if now < self.opened_at + self.reset:
                return "rejected"
            self._go(HALF_OPEN)
        failed = outcome == "fail"
        if outcome == "bug":
            return "ran"   # counts neither way: a probe leaves the circuit half-open
        if self.state == HALF_OPEN:
            if failed:
                self.opened_at = now
                self._go(OPEN)
            else:
                self._go(CLOSED)
                self.failures = 0
        elif failed:
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = now
                self._go(OPEN)
        else:
            self.failures = 0
        return "ran"


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = trio.testing.MockClock()
        self.breaker = None
        self.model = None
        self.seen: list[tuple[str, str]] = []

    @initialize(threshold=st.integers(1, 4), reset=st.sampled_from([0.0, 1.0, 5.0, 30.0]))
    def create(self, threshold, reset):
        self.breaker = Breaker("test", failure_threshold=threshold, reset_timeout=reset)
        self.breaker.on_state_change(lambda old, new: self.seen.append((old, new)))
        self.model = Model(threshold, reset)

    @rule(outcome=st.sampled_from(sorted(OUTCOMES)))
    def call(self, outcome):
        async def main():
            try:
                return await self.breaker.call(OUTCOMES[outcome])
            except Exception as exc:
                return exc

        got = trio.run(main, clock=self.clock)
        expected = self.model.call(outcome, self.clock.current_time())
        if expected == "rejected":
            assert isinstance(got, errors.StoreUnavailable) and str(got).startswith("circuit open:")
        elif outcome == "ok":
            assert got == "ok"
        elif outcome == "fail":
            assert isinstance(got, errors.StoreUnavailable) and str(got) == "boom"
        elif outcome == "bug":
            assert isinstance(got, OverflowError)
        elif outcome == "lost":
            assert isinstance(got, errors.ChunkMissing) and got.errno == errno.EIO
        else:
            assert isinstance(got, errors.NotFound)

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.99, 5.0, 30.0]))
    def wait(self, seconds):
        self.clock.jump(seconds)

    @invariant()
    def agrees(self):
        stats = self.breaker.statistics()
        assert stats.state == self.model.state
        assert self.seen == self.model.transitions
        assert stats.state_changes == len(self.model.transitions)
        if self.model.state == CLOSED:
            assert stats.consecutive_failures == self.model.failures
        else:
            assert stats.opened_at == self.model.opened_at


TestBreakerMachine = pytest.mark.expect_log("circuit opens after")(BreakerMachine.TestCase)
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


# ---- unit tests --------------------------------------------------------------------------

def run(fn, clock=None):
    return trio.run(fn, clock=clock or trio.testing.MockClock())


@pytest.mark.expect_log("circuit opens after")
def test_opens_after_threshold_and_rejects_without_calling():
    calls = []

    def failing():
        calls.append(1)
        raise errors.StoreUnavailable("redis down")

    async def main():
        b = Breaker("store", failure_threshold=2, reset_timeout=10)
        for _ in range(2):
            with pytest.raises(errors.StoreUnavailable, match="redis down"):
                await b.call(failing)
        assert b.state == OPEN
        with pytest.raises(errors.StoreUnavailable, match="^circuit open: redis down$"):
            await b.call(failing)
        assert len(calls) == 2
        assert b.statistics().rejected == 1

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_half_open_lets_exactly_one_probe_through():
    release = threading.Event()
    started = []

    def slow_ok():
        started.append(1)
        release.wait(30)
        return "probe"

    async def main():
        clock = trio.lowlevel.current_clock()
        b = Breaker("store", failure_threshold=1, reset_timeout=5)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        clock.jump(5)
        results = []

        async def probe():
            results.append(await b.call(slow_ok))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            await trio.testing.wait_all_tasks_blocked()
            assert b.state == HALF_OPEN
            with pytest.raises(errors.StoreUnavailable, match="circuit open"):
                await b.call(ok)
            release.set()
        assert results == ["probe"] and started == [1]
        assert b.state == CLOSED

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_failed_probe_reopens_for_another_reset_timeout():
    async def main():
        clock = trio.lowlevel.current_clock()
        b = Breaker("store", failure_threshold=1, reset_timeout=5)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        clock.jump(5)
        with pytest.raises(errors.StoreUnavailable, match="boom"):
            await b.call(boom)
        assert b.state == OPEN and b.statistics().opened_at == clock.current_time()
        clock.jump(4)
        with pytest.raises(errors.StoreUnavailable, match="circuit open"):
            await b.call(ok)
        clock.jump(1)
        assert await b.call(ok) == "ok"
        assert b.state == CLOSED

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_timeout_abandons_the_thread_and_counts_as_failure():
    release = threading.Event()

    def hangs():
        release.wait(30)

    async def main():
        b = Breaker("store", failure_threshold=1, reset_timeout=5, call_timeout=2)
        # autojump: the clock leaps to the deadline as soon as every task waits
        with pytest.raises(errors.StoreUnavailable, match="no answer within 2 s"):
            await b.call(hangs)
        assert b.state == OPEN
        stats = b.statistics()
        assert (stats.timeouts, stats.failures) == (1, 1)
        release.set()

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_patient_call_is_waited_for_past_the_call_timeout():
    """An append's outcome must be known: it is never abandoned, however long it takes."""
    release = threading.Event()

    def slow():
        release.wait(30)
        return "stored"

    async def main():
        b = Breaker("store", failure_threshold=1, reset_timeout=5, call_timeout=2)
        async with trio.open_nursery() as nursery:
            async def let_it_finish():
                await trio.sleep(60)   # far past the call_timeout (autojump: no real wait)
                release.set()
            nursery.start_soon(let_it_finish)
            assert await b.call(slow, patient=True) == "stored"
        assert b.state == CLOSED and b.statistics().timeouts == 0

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.expect_log("circuit opens after")
def test_cancelled_probe_frees_the_probe_slot():
    release = threading.Event()

    def hangs():
        release.wait(30)

    async def main():
        clock = trio.lowlevel.current_clock()
        b = Breaker("store", failure_threshold=1, reset_timeout=5)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        clock.jump(5)
        with trio.move_on_after(1):
            await b.call(hangs)  # the probe, cancelled by its caller
        release.set()
        assert b.state == HALF_OPEN
        assert await b.call(ok) == "ok"  # the next caller may probe
        assert b.state == CLOSED

    run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.expect_log("circuit opens after")
def test_late_success_from_an_older_state_does_not_close():
    release = threading.Event()

    def slow_ok():
        release.wait(30)
        return "late"

    async def main():
        b = Breaker("store", failure_threshold=1, reset_timeout=100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.call, slow_ok)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(errors.StoreUnavailable):
                await b.call(boom)
            assert b.state == OPEN
            release.set()
        assert b.state == OPEN

    run(main)


def test_domain_errors_are_not_failures():
    async def main():
        b = Breaker("store", failure_threshold=1)
        for _ in range(3):
            with pytest.raises(errors.NotFound):
                await b.call(missing)
        assert b.state == CLOSED

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_bugs_and_bad_input_are_not_store_failures():
    """An exception that is not the store's own (a value the codec cannot encode, a bug)
    passes through, but neither opens the circuit nor resets the count of failures."""
    async def main():
        b = Breaker("store", failure_threshold=2)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        for _ in range(3):
            with pytest.raises(OverflowError):
                await b.call(bug)
        stats = b.statistics()
        assert (stats.state, stats.consecutive_failures, stats.failures) == (CLOSED, 1, 1)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        assert b.state == OPEN

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_a_probe_that_hits_a_bug_leaves_the_probe_to_the_next_call():
    clock = trio.testing.MockClock()

    async def main():
        b = Breaker("store", failure_threshold=1, reset_timeout=1.0)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        clock.jump(1.0)
        with pytest.raises(OverflowError):
            await b.call(bug)
        assert b.state == HALF_OPEN
        assert await b.call(ok) == "ok"   # probes, instead of being rejected
        assert b.state == CLOSED

    run(main, clock)


def test_a_missing_chunk_is_an_answer_not_a_failure():
    """The store answered (without the chunk): EIO for the read, but the store is
    healthy, so the circuit stays closed for every other call."""
    async def main():
        b = Breaker("store", failure_threshold=1)
        for _ in range(3):
            with pytest.raises(errors.ChunkMissing):
                await b.call(lost)
        stats = b.statistics()
        assert (stats.state, stats.failures, stats.successes) == (CLOSED, 0, 3)

    run(main)


@pytest.mark.expect_log("circuit opens after", "state listener .* failed")
def test_listener_errors_are_logged_not_raised(caplog):
    async def main():
        b = Breaker("store", failure_threshold=1)

        @b.on_state_change
        def bad(old, new):
            raise RuntimeError("metrics broke")

        with pytest.raises(errors.StoreUnavailable, match="boom"):
            await b.call(boom)
        assert b.state == OPEN

    run(main)
    assert "state listener" in caplog.text


def test_statistics_is_a_frozen_snapshot():
    async def main():
        b = Breaker("store", failure_threshold=3)
        before = b.statistics()
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        assert before.failures == 0 and before.consecutive_failures == 0
        after = b.statistics()
        assert (after.failures, after.consecutive_failures, after.last_failure) == (1, 1, "boom")
        with pytest.raises(AttributeError):
            after.failures = 5

    run(main)


@pytest.mark.expect_log("circuit opens after")
def test_reset_closes():
    async def main():
        b = Breaker("store", failure_threshold=1, reset_timeout=100)
        with pytest.raises(errors.StoreUnavailable):
            await b.call(boom)
        b.reset()
        assert b.state == CLOSED and await b.call(ok) == "ok"

    run(main)


def test_passes_arguments_through():
    async def main():
        b = Breaker("store")
        assert await b.call(lambda a, b: a + b, 2, 3) == 5

    run(main)
