"""Fixtures of the systemd unit and mount helper tests."""

import os
import shlex
import sys

import pytest

from mounting import unmount_all
from systemd_harness import REPO


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
