"""The shared helpers of tests/mounting.py that every suite's teardown relies on."""

import os
import subprocess

import pytest

from tests.harness.mounts import mounts_under, unmount_all


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_unmount_all_finds_escaped_and_nested_mounts(tmp_path):
    outer = tmp_path / "with space"   # mountinfo writes it as with\040space
    inner = outer / "inner"
    outer.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "lh-test", str(outer)], check=True)
        inner.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "lh-test", str(inner)], check=True)
        assert mounts_under(str(tmp_path)) == [str(outer), str(inner)]
        assert mounts_under(str(tmp_path / "with")) == []   # a prefix, not a parent
        unmount_all(str(tmp_path))
        assert mounts_under(str(tmp_path)) == []
    finally:
        subprocess.run(["umount", "-R", "-l", str(outer)], capture_output=True)
