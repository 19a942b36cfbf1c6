"""`python -m benchmarks.outage` leaves nothing behind: no mount, no daemon, no
redis-server, no temp dir, whether it finishes or is interrupted. Its temp dirs go to
a TMPDIR of the test's own, so what it leaves can be told from anything else."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.mounts import processes_under, sweep
from lighthousefs import mounttable
from tests.harness import REPO
from tests.harness.mounts import mounts_under


pytestmark = [
    pytest.mark.mount,
    pytest.mark.redis,
    pytest.mark.skipif(not os.path.exists("/dev/fuse") or not shutil.which("redis-server")
                       or not shutil.which("fusermount3"), reason="needs /dev/fuse, fusermount3 and redis-server"),
]


def start_outage(work: Path, out, err) -> subprocess.Popen:
    work.mkdir()
    return subprocess.Popen([sys.executable, "-m", "benchmarks.outage", "--iterations", "5"], cwd=REPO,
                            env=dict(os.environ, TMPDIR=str(work)), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, text=True, start_new_session=True)


def left_behind(work: Path) -> list[str]:
    return ([f"mount {m}" for m in mounts_under(work)] + [f"process {p.pid}" for p in processes_under(work)]
            + [f"file {f}" for f in work.iterdir()])


def finish(proc: subprocess.Popen, work: Path, timeout: float = 120) -> int:
    """Wait for the run; one that hangs is killed. Returns its exit code."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_finished_run_leaves_nothing(tmp_path):
    work = tmp_path / "tmp"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = start_outage(work, out, err)
        try:
            code = finish(proc, work)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            assert code == 0, stderr[-3000:]
            result = json.loads(stdout)
            assert result["iterations"] == 5 and result["write_failures"] == 5 and result["recovery_s"] >= 0
            assert left_behind(work) == []
        finally:
            sweep(work)   # whatever the run left, the test does not leave it


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_nothing(tmp_path, sig):
    """Interrupted once its daemon is mounted (Ctrl-C, or a SIGTERM from a supervisor)."""
    work = tmp_path / "tmp"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = start_outage(work, out, err)
        try:
            deadline = time.monotonic() + 60
            while not any(e.fstype.startswith("fuse") for e in mounttable.mounts_under(str(work))):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never mounted"
                time.sleep(0.05)
            proc.send_signal(sig)
            code = finish(proc, work)
            err.seek(0)
            assert code != 0 and code != -signal.SIGKILL, err.read()[-3000:]
            assert left_behind(work) == []
        finally:
            sweep(work)
