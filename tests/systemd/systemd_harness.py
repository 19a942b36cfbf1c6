"""Helpers of the systemd unit and mount helper tests (a module name of its
own: `from conftest import` would be ambiguous between conftest files)."""

import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"


def mounts_under(root: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


def unmount_all(root: str) -> None:
    """fusermount3 -u, then lazily (-uz), for every mount under root."""
    for point in sorted(mounts_under(root), key=len, reverse=True):
        for argv in (["fusermount3", "-u", point], ["umount", point],
                     ["fusermount3", "-uz", point], ["umount", "-l", point]):
            if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
                break
