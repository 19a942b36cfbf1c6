"""The benchmark harness in its quickest form: real tmpfs and bindfs mounts, and
lighthousefs (sqlite) when it mounts here. Checks the shape of the results, never timings."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.mounts import processes_under, sweep
from benchmarks.ops import OPS
from benchmarks.report import markdown
from benchmarks.stats import percentile, summarize
from tests.harness import REPO
from tests.harness.mounts import mounts_under

STATS = {"n", "p50_us", "p90_us", "p99_us", "max_us", "ops_per_s"}
NEEDS_MOUNTS = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("bindfs"),
                                  reason="needs root (mount -t tmpfs), /dev/fuse and bindfs")


class HarnessTimeout(AssertionError):
    def __init__(self, message, out, err, left):
        super().__init__(message)
        self.out, self.err, self.left = out, err, left


def run_harness(cmd, workdir: Path, timeout: float, grace: float = 60.0):
    """Run a harness command whose temp dirs go under `workdir` (TMPDIR); returns its
    CompletedProcess and what had to be swept up after it (empty if it cleaned up).

    On timeout it is stopped as an operator would stop it: SIGTERM (the harness unwinds
    and runs its cleanups), then SIGINT, each given `grace` seconds, then SIGKILL of its
    process group; HarnessTimeout then fails the test. Whatever happened (a timeout, an
    interrupted test), `workdir` is swept afterwards: the mounts under it unmounted, the
    processes naming it stopped, the directory removed. Output goes to files, not pipes:
    a daemon that inherited a pipe would keep a read of it waiting past the harness."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, TMPDIR=str(workdir)), text=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        timed_out = False
        try:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                for sig in (signal.SIGTERM, signal.SIGINT):
                    proc.send_signal(sig)
                    try:
                        proc.wait(timeout=grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        finally:
            if proc.poll() is None:   # the wait was interrupted: never leave it running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            left = sweep(workdir)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        raise HarnessTimeout(f"{' '.join(map(str, cmd))[:200]}: no result within {timeout:g} s, stopped "
                             f"(exit {proc.returncode}); swept up {left}: {stderr[-3000:]}", stdout, stderr, left)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), left


def test_percentile_is_nearest_rank():
    s = list(range(1, 101))
    assert (percentile(s, 50), percentile(s, 99), percentile(s, 100)) == (50, 99, 100)
    assert percentile([7], 99) == 7
    assert set(summarize([1000, 2000, 3000])) == STATS


@pytest.mark.mount
@NEEDS_MOUNTS
def test_quick_run_writes_complete_results(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--no-pin", "--iterations", "10",
           "--modes", "sqlite", "--mem-files", "100,300", "--out", str(tmp_path / "out")]
    p, left = run_harness(cmd, tmp_path / "tmp", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert left == [], f"the harness left these behind: {left}"
    tmp_path = tmp_path / "out"

    doc = json.loads((tmp_path / "latest.json").read_text())
    assert {"started", "finished", "host", "config", "results", "extras", "ratios", "skipped", "check"} <= set(doc)
    assert len(list(tmp_path.glob("2*.json"))) == 1 and (tmp_path / "latest.png").stat().st_size > 0
    targets = doc["results"]["unpinned"]
    assert {"tmpfs", "bindfs"} <= set(targets)
    assert ("lighthousefs-sqlite" in targets) != ("lighthousefs-sqlite" in doc["skipped"])
    for name, ops in targets.items():
        assert set(ops) == set(OPS), name
        for op, s in ops.items():  # lighthousefs may fail an operation: then it says why
            assert set(s) == STATS or (name.startswith("lighthousefs") and set(s) == {"error"}), f"{name} {op}: {s}"
    assert doc["extras"]["bindfs"]["throughput"]["closes_per_s"] > 0
    assert doc["extras"]["bindfs"]["propagation"]["n"] > 0
    assert [m["files"] for m in doc["extras"]["bindfs"]["memory"]] == [100, 300]
    if "lighthousefs-sqlite" in targets:
        assert set(doc["ratios"]["unpinned"]["lighthousefs-sqlite"]["stat_existing"]) == {
            "p50_vs_tmpfs", "p99_vs_tmpfs", "p50_vs_bindfs", "p99_vs_bindfs"}
    assert doc["check"]["errors"] == [], doc["check"]["errors"]
    assert "| `stat_existing` |" in markdown(doc)


# A stand-in for the harness that mounts and starts a daemon the way benchmarks.mounts
# does, then hangs. argv: a marker file (outside TMPDIR) written by its cleanups, and
# "stubborn" to ignore SIGTERM and SIGINT as a harness stuck in a system call would.
HANGING_HARNESS = """
import signal, subprocess, sys, tempfile, time
from pathlib import Path
from benchmarks.mounts import Tmpfs, cleanup, install_handlers, kill
install_handlers()
cleanup("marker", Path(sys.argv[1]).write_text, "cleaned up")
target = Tmpfs()
target.start()
daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(target.dir / "daemon")],
                          start_new_session=True)
cleanup("daemon", kill, daemon.pid)
if sys.argv[2] == "stubborn":
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
print("mounted", flush=True)
time.sleep(600)
"""


@pytest.mark.mount
@NEEDS_MOUNTS
@pytest.mark.parametrize("behaviour", ["cooperative", "stubborn"])
def test_a_harness_that_times_out_is_stopped_and_swept(tmp_path, behaviour):
    """SIGTERM first, so the harness unmounts and stops its own daemons; one that does
    not stop is killed, and the sweep unmounts and stops what it left. Either way,
    nothing stays mounted or running, and the temp dir is gone."""
    work, marker = tmp_path / "tmp", tmp_path / "marker"
    cmd = [sys.executable, "-c", HANGING_HARNESS, str(marker), behaviour]
    # Generous: the stand-in must start, mount and print within the timeout, and unwind
    # within the grace, on a loaded 2-core machine.
    with pytest.raises(HarnessTimeout, match="no result within 10 s") as timed_out:
        run_harness(cmd, work, timeout=10, grace=5)
    stopped = timed_out.value
    assert stopped.out == "mounted\n", stopped.err
    if behaviour == "cooperative":   # SIGTERM: it unwound and cleaned up itself
        assert "exit 143" in str(stopped) and marker.read_text() == "cleaned up"
        assert stopped.left == []
    else:   # killed: the sweep found its mount and its daemon
        assert "exit -9" in str(stopped) and not marker.exists()
        assert [what.split()[0] for what in stopped.left] == ["mount", "process"], stopped.left
    assert mounts_under(work) == [] and processes_under(work) == []
    assert not work.exists()
