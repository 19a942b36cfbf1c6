"""The log checker (tests/checklogs.py) itself, run on a small test file in a pytest of
its own (a subprocess: this run's checker must not see the warnings it logs)."""
from tests.harness import REPO

CASES = '''
import logging
import pytest
from tests.harness import mounts

log = logging.getLogger("lighthousefs.somewhere")


def daemon_logged(tmp_path, line):
    (tmp_path / "mnt.log").write_text("2026-12-02 10:00:00,000 INFO lighthousefs.daemon: mounted\\n" + line + "\\n")
    mounts.started.append(mounts.Mount(tmp_path / "mnt", "sqlite://x", tmp_path / "mnt.log", 0))


def test_info_passes():
    log.info("all is well")

def test_undeclared_warning_fails():
    log.warning("breaker opened")

@pytest.mark.expect_log("breaker opened")
def test_declared_warning_passes():
    log.warning("breaker opened")
    log.error("breaker opened again")

def test_declared_by_fixture_passes(expect_log):
    expect_log.add("lost")
    log.error("data lost")

@pytest.mark.expect_log("something else")
def test_declared_another_fails():
    log.warning("breaker opened")

def test_daemon_warning_fails(tmp_path):
    daemon_logged(tmp_path, "2026-12-02 10:00:01,000 WARNING lighthousefs.store: store slow")

@pytest.mark.expect_log("store slow")
def test_daemon_warning_declared_passes(tmp_path):
    daemon_logged(tmp_path, "2026-12-02 10:00:01,000 WARNING lighthousefs.store: store slow")

@pytest.mark.expect_log("Traceback", "unexpectedly")
def test_daemon_traceback_always_fails(tmp_path):
    daemon_logged(tmp_path, "Traceback (most recent call last):")

def test_daemon_info_passes(tmp_path):
    daemon_logged(tmp_path, "2026-12-02 10:00:01,000 INFO lighthousefs.store: warning: a word, not a level")
'''


def test_undeclared_warnings_fail_and_declared_ones_pass(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.checklogs"]\n')
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    # A test fails at teardown (after its mounts are gone and their logs complete), so
    # pytest counts its call as passed and its teardown as an error.
    result.assert_outcomes(passed=9, errors=4)
    text = result.stdout.str()
    failed = {line.split("::test_")[1].split(" ")[0] for line in text.splitlines()
              if line.startswith("ERROR test_cases.py::") and " - AssertionError" in line}
    assert failed == {"undeclared_warning_fails", "declared_another_fails", "daemon_warning_fails",
                      "daemon_traceback_always_fails"}
    assert "WARNING lighthousefs.somewhere: breaker opened" in text
    assert "mnt.log: 2026-12-02 10:00:01,000 WARNING lighthousefs.store: store slow" in text
