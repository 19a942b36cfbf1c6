"""A pytest plugin: a test fails when it logs a warning it did not declare.

As s3ql's tests/pytest_checklogs.py: a WARNING, ERROR or CRITICAL record logged in this
process during a test (setup, call or teardown), or a WARNING/ERROR/CRITICAL line in the
log of a daemon the test mounted (tests.harness.mounts.mount(), which the `mounter`
fixture uses), fails the test unless the test declared it:

    @pytest.mark.expect_log(r"circuit breaker .* opened", "lost its data")
    def test_x(...): ...

    def test_y(expect_log):
        expect_log.add(r"snapshot at seq \\d+ .* checksum")

A declaration is a regular expression searched in the record's message (in-process) or
in the whole line (daemon logs); one declaration covers any number of matches. A line
with "Traceback" or "unexpectedly" in a daemon log always fails: an unexpected error is
a bug, never a declared outcome.

The check runs after the test's teardown (its mounts are unmounted by then, so their
logs are complete): a failure shows as an error at teardown, listing each line.
"""
from __future__ import annotations

import logging
import re

import pytest

from tests.harness import mounts

DAEMON_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ")   # cli.py's log format
ALWAYS_BAD = ("Traceback", "unexpectedly")


class ExpectedLogs:
    """The warnings a test declared (the expect_log marker's and fixture's)."""

    def __init__(self, patterns=()):
        self.patterns = [re.compile(p) for p in patterns]

    def add(self, regex: str) -> None:
        self.patterns.append(re.compile(regex))

    def covers(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_EXPECTED = pytest.StashKey[ExpectedLogs]()
_RECORDS = pytest.StashKey[_Records]()


def _expected(item) -> ExpectedLogs:
    if _EXPECTED not in item.stash:
        item.stash[_EXPECTED] = ExpectedLogs(p for m in item.iter_markers("expect_log") for p in m.args)
    return item.stash[_EXPECTED]


@pytest.fixture
def expect_log(request) -> ExpectedLogs:
    """Declare, with .add(regex), a warning this test causes on purpose."""
    return _expected(request.node)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "expect_log(*regexes): warnings (in-process or in a daemon's log) this test "
        "causes on purpose; any other WARNING or ERROR fails it (tests/checklogs.py)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    handler = item.stash[_RECORDS] = _Records()
    logging.getLogger().addHandler(handler)
    mounts.started.clear()   # mounts of earlier tests were checked (or are not ours to check)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        result = yield
    finally:
        handler = item.stash.get(_RECORDS, None)
        if handler is not None:
            logging.getLogger().removeHandler(handler)
    problems = unexpected(item, handler.records if handler else [], list(mounts.started))
    mounts.started.clear()
    if problems:
        raise AssertionError("logged warnings or errors the test did not declare "
                             "(declare expected ones with @pytest.mark.expect_log(regex)):\n"
                             + "\n".join(problems))
    return result


def unexpected(item, records, started) -> list[str]:
    """The records and daemon log lines `item` did not declare."""
    expected = _expected(item)
    problems = [f"  {r.levelname} {r.name}: {r.getMessage()}" for r in records
                if not expected.covers(r.getMessage())]
    for log in dict.fromkeys(m.log for m in started):   # a path mounted again logs to one file
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if any(m in line for m in ALWAYS_BAD) or (DAEMON_LEVEL.match(line) and not expected.covers(line)):
                problems.append(f"  {log.name}: {line}")
    return problems
