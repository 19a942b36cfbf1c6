"""The one harness for real mounts, Redis servers and the mount table, shared by the
tests (every tier) and the benchmarks.

    mounts         run this checkout's `lighthouse`, mount and unmount (never hanging on a
                   dead or frozen mount), the mount table (lighthousefs.mounttable), waits
    redis_servers  real redis-server processes and a 3-master Cluster on loopback ports
    scenarios      checks several test files make on a live mount

Importable as `tests.harness` from the checkout's root: by pytest (the root is on its
pythonpath) and by `python -m benchmarks` (run from the root), with no sys.path edits.
It imports lighthousefs but never pytest, so the benchmarks can use it.
"""
from __future__ import annotations

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]   # the checkout
CSI_DIR = REPO / "csi-driver"
SYSTEMD_DIR = REPO / "systemd"
