"""Fixtures of the systemd unit and mount helper tests."""

import shlex

import pytest

from tests.harness.mounts import lighthouse_cmd, lighthouse_env, unmount_all


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
    pythonpath = lighthouse_env()["PYTHONPATH"]
    wrapper.write_text("#!/bin/sh\n"
                       f"PYTHONPATH={shlex.quote(pythonpath)} "
                       f"exec {shlex.join(lighthouse_cmd())} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)
