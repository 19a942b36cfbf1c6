"""Fixtures for the systemd unit and mount helper tests."""

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

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


@pytest.fixture
def base(tmp_path):
    yield tmp_path
    unmount_all(str(tmp_path))


@pytest.fixture
def lighthouse_bin(tmp_path) -> str:
    """An executable `lighthouse` running this checkout's package, whether or
    not the console script is installed."""
    wrapper = tmp_path / "bin" / "lighthouse"
    wrapper.parent.mkdir()
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    wrapper.write_text("#!/bin/sh\n"
                       f"PYTHONPATH={shlex.quote(pythonpath)} "
                       f"exec {shlex.quote(sys.executable)} -m lighthousefs.cli \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)
