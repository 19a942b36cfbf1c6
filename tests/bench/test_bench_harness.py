"""The benchmark harness in its quickest form: real tmpfs and bindfs mounts, and
lighthousefs (sqlite) when it mounts here. Checks the shape of the results, never timings."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ops import OPS
from benchmarks.report import markdown
from benchmarks.stats import percentile, summarize

REPO = Path(__file__).resolve().parents[2]
STATS = {"n", "p50_us", "p90_us", "p99_us", "max_us", "ops_per_s"}


def test_percentile_is_nearest_rank():
    s = list(range(1, 101))
    assert (percentile(s, 50), percentile(s, 99), percentile(s, 100)) == (50, 99, 100)
    assert percentile([7], 99) == 7
    assert set(summarize([1000, 2000, 3000])) == STATS


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("bindfs"),
                    reason="needs root (mount -t tmpfs), /dev/fuse and bindfs")
def test_quick_run_writes_complete_results(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--no-pin", "--iterations", "10",
           "--modes", "sqlite", "--mem-files", "100,300", "--out", str(tmp_path)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]

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
    assert not [line for line in open("/proc/mounts") if "lhbench-" in line], "a mount was left behind"
