"""container/: the image cannot be built here (no container engine), so
check what can be: every file the Containerfile copies exists, its scripts
parse, and the health check works against a real driver."""

import os
import re
import subprocess
import sys

import pytest
from csi_harness import env_with_paths

from tests.harness import REPO

CONTAINERFILE = REPO / "container" / "Containerfile"
HEALTHCHECK = REPO / "container" / "healthcheck"


def _instructions():
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_copied_sources_exist():
    for line in _instructions():
        if line.startswith("COPY") and "--from=" not in line:
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"Containerfile copies missing {source}"


def test_image_shape():
    lines = _instructions()
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms and all("slim" in line for line in froms)
    assert any(line.startswith("USER") and "root" not in line for line in lines)
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any("fuse3" in line for line in lines if line.startswith("RUN"))


@pytest.mark.parametrize("script", [HEALTHCHECK, REPO / "systemd" / "mount.fuse.lighthouse"])
def test_scripts_parse_and_are_executable(script):
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0


def _healthcheck(env_extra) -> int:
    env = env_with_paths()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env.update(env_extra)
    return subprocess.run([str(HEALTHCHECK)], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_probes_the_driver(make_driver, tmp_path):
    driver = make_driver()
    assert _healthcheck({"CSI_ENDPOINT": f"unix://{driver.socket}"}) == 0
    driver.stop()
    assert _healthcheck({"CSI_ENDPOINT": f"unix://{driver.socket}"}) != 0


@pytest.mark.mount
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_healthcheck_of_the_daemon(base):
    pytest.importorskip("lighthousefs.cli")
    tmp_path = base
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lighthouse").write_text(
        f"#!/bin/sh\nexec {sys.executable} -m lighthousefs.cli \"$@\"\n")
    (bin_dir / "lighthouse").chmod(0o755)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "LIGHTHOUSE_MOUNTPOINT": str(mountpoint)}
    assert _healthcheck(env) != 0  # nothing mounted
    subprocess.run([str(bin_dir / "lighthouse"), "mount", str(mountpoint),
                    "--store", f"sqlite://{tmp_path / 'store.db'}"],
                   check=True, env=env_with_paths(), capture_output=True, timeout=90)
    assert _healthcheck(env) == 0
    subprocess.run([str(bin_dir / "lighthouse"), "umount", str(mountpoint)],
                   check=True, env=env_with_paths(), capture_output=True, timeout=90)
    assert _healthcheck(env) != 0


@pytest.mark.mount
@pytest.mark.redis
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
def test_healthcheck_of_the_daemon_fails_while_its_store_is_down(base, own_server):
    """The image's check asks /readyz: unhealthy while Redis is down, healthy again after."""
    import socket
    import uuid

    from tests.harness.mounts import eventually
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "lighthouse").write_text(f"#!/bin/sh\nexec {sys.executable} -m lighthousefs.cli \"$@\"\n")
    (bin_dir / "lighthouse").chmod(0o755)
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LIGHTHOUSE_MOUNTPOINT": str(mountpoint),
           "LIGHTHOUSE_METRICS": address}
    subprocess.run([str(bin_dir / "lighthouse"), "mount", str(mountpoint), "--metrics", address],
                   check=True, capture_output=True, timeout=90,
                   env=dict(env_with_paths(), LIGHTHOUSE_STORE=f"{own_server.url}?namespace=h{uuid.uuid4().hex[:8]}"))
    try:
        assert _healthcheck(env) == 0
        own_server.kill()
        eventually(lambda: _healthcheck(env) != 0, timeout=30, interval=0.5)
        own_server.restart(keep_data=True)
        eventually(lambda: _healthcheck(env) == 0, timeout=30, interval=0.5)
    finally:
        subprocess.run([str(bin_dir / "lighthouse"), "umount", str(mountpoint)],
                       env=env_with_paths(), capture_output=True, timeout=90)
