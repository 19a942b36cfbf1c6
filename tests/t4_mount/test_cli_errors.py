"""The command line when something is wrong: one line saying what and what to do, a
non-zero exit, no traceback, and nothing created that was not asked for."""
from __future__ import annotations

import errno
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tests.harness import REPO
from tests.harness.mounts import is_mounted, lighthouse, next_line, unmount_all, unmount_quietly


# A FUSE daemon that mounts and is then killed: the dead mount a kill -9 leaves, with
# no attributes in the kernel's cache (as a lighthousefs mount is once its 300 s pass).
DEAD_DAEMON = """
import sys, pyfuse3
pyfuse3.init(pyfuse3.Operations(), sys.argv[1], {"fsname=" + sys.argv[2], "subtype=" + sys.argv[2]})
print("mounted", flush=True)
sys.stdin.read()
"""


def leave_dead_mount(point: pathlib.Path, subtype: str) -> None:
    daemon = subprocess.Popen([sys.executable, "-c", DEAD_DAEMON, str(point), subtype],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        assert next_line(daemon) == "mounted\n"
    finally:
        daemon.kill()
        daemon.wait()
    with pytest.raises(OSError) as err:
        os.lstat(point)
    assert err.value.errno == errno.ENOTCONN


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with one line naming `words`, and no traceback."""
    message = result.stderr.strip()
    assert result.returncode != 0, result
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message
    return message


def mount_cli(point, store: str, log, *args: str) -> subprocess.CompletedProcess:
    return lighthouse("mount", str(point), "--store", store, "--log", str(log), *args, check=False)


@pytest.fixture
def cleanup(tmp_path):
    """Unmounts whatever a test left under tmp_path (live or dead) and stops its daemons."""
    daemons: list[tuple[pathlib.Path, int]] = []
    yield daemons
    for point, pid in daemons:
        unmount_quietly(point, pid)
    unmount_all(str(tmp_path))


def daemon_of(result: subprocess.CompletedProcess) -> int:
    return int(re.search(r"\(pid (\d+)", result.stdout).group(1))


@pytest.mark.mount
def test_mount_over_a_dead_lighthouse_mount_detaches_it(tmp_path, store_url, cleanup):
    point = tmp_path / "mnt"
    point.mkdir()
    leave_dead_mount(point, "lighthouse")
    subprocess.run(["touch", str(point)], capture_output=True)   # fails: the mount is dead
    result = mount_cli(point, store_url, tmp_path / "log")
    if result.returncode == 0:
        cleanup.append((point, daemon_of(result)))
    assert result.returncode == 0, result.stderr
    assert (point / ".lighthouse" / "health").read_text()
    lighthouse("umount", str(point))
    assert not is_mounted(point)   # the dead mount under it was detached too


@pytest.mark.mount
def test_mount_over_a_dead_mount_of_another_file_system_says_what_to_do(tmp_path, store_url, cleanup):
    point = tmp_path / "mnt"
    point.mkdir()
    leave_dead_mount(point, "other")
    result = mount_cli(point, store_url, tmp_path / "log")
    if result.returncode == 0:
        cleanup.append((point, daemon_of(result)))
    one_line_error(result, "dead fuse.other mount", f"fusermount3 -u -z {point}")
    assert is_mounted(point)   # not ours to detach


@pytest.mark.mount
def test_a_store_in_a_missing_directory_is_refused(tmp_path, cleanup):
    store = f"sqlite://{tmp_path}/missing/a.db"
    result = mount_cli(tmp_path / "mnt", store, tmp_path / "log")
    if result.returncode == 0:
        cleanup.append((tmp_path / "mnt", daemon_of(result)))
    one_line_error(result, f"{tmp_path}/missing does not exist")
    one_line_error(lighthouse("emit", "note", "--store", store, check=False), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_reading_never_creates_a_store(tmp_path):
    typo = tmp_path / "typo.db"
    one_line_error(lighthouse("log", "--store", f"sqlite://{typo}", check=False), str(typo), "no store")
    assert not typo.exists()
    # The default store too (made by mount and emit, never by log).
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("LIGHTHOUSE_STORE", None)
    one_line_error(lighthouse("log", check=False, env=env), "no store")
    assert not (tmp_path / "data").exists()
    lighthouse("emit", "note", env=env)
    assert '"type":"note"' in lighthouse("log", env=env).stdout


def test_reading_never_creates_a_redis_namespace(own_server):
    url = own_server.url + "?namespace=typo"
    one_line_error(lighthouse("log", "--store", url, check=False), "'typo'", "no store")
    assert own_server.client().keys("*typo*") == []


def test_a_malformed_store_url_is_one_line_without_its_password(tmp_path, cleanup):
    url = "redis://:s3cret@[::1/0"   # urlsplit: "Invalid IPv6 URL"
    for result in (lighthouse("log", "--store", url, check=False),
                   lighthouse("emit", "note", "--store", url, check=False),
                   mount_cli(tmp_path / "mnt", url, tmp_path / "log")):
        if result.returncode == 0:
            cleanup.append((tmp_path / "mnt", daemon_of(result)))
        one_line_error(result, "redis://:***@[::1/0", "not a valid store URL")
        assert "s3cret" not in result.stderr + result.stdout
    if (tmp_path / "log").exists():
        assert "s3cret" not in (tmp_path / "log").read_text()


@pytest.mark.mount
def test_an_unknown_redis_parameter_is_refused_by_name(own_server, tmp_path, cleanup):
    url = own_server.url + "?namespace=p&tiemout=5"
    one_line_error(lighthouse("log", "--store", url, check=False), "unknown parameter 'tiemout'")
    one_line_error(lighthouse("emit", "note", "--store", url, check=False), "unknown parameter 'tiemout'")
    result = mount_cli(tmp_path / "mnt", url, tmp_path / "log")
    if result.returncode == 0:
        cleanup.append((tmp_path / "mnt", daemon_of(result)))
    one_line_error(result, "unknown parameter 'tiemout'")
    # redis-py's own parameters still pass, ours are taken.
    lighthouse("emit", "note", "--store", own_server.url + "?namespace=p&timeout=5&health_check_interval=10")


@pytest.mark.mount
def test_a_metrics_port_in_use_is_one_line(tmp_path, store_url, cleanup):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = mount_cli(tmp_path / "mnt", store_url, tmp_path / "log", "--metrics", address)
    if result.returncode == 0:
        cleanup.append((tmp_path / "mnt", daemon_of(result)))
    one_line_error(result, f"--metrics {address}", "in use")
    assert not is_mounted(tmp_path / "mnt")


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_an_inaccessible_fuse_device_is_one_line(tmp_path, store_url):
    """In a mount namespace of its own, /dev/fuse is a device node on a nodev tmpfs:
    opening it fails with EACCES, as for a user without access to it."""
    devices = tmp_path / "dev"
    devices.mkdir()
    script = ('mount -t tmpfs -o nodev,size=64k lighthouse-test "$1" && mknod "$1/fuse" c 10 229 && '
              'mount --bind "$1/fuse" /dev/fuse && shift && exec "$@"')
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(devices),
         sys.executable, "-m", "lighthousefs.cli", "mount", str(tmp_path / "mnt"), "--store", store_url,
         "--log", str(tmp_path / "log")], capture_output=True, text=True, timeout=120)
    try:
        one_line_error(result, "/dev/fuse", "Permission denied")
    finally:
        if result.returncode == 0:   # mounted in that namespace: stop its daemon
            os.kill(daemon_of(result), 9)


@pytest.mark.mount
def test_a_failed_mount_shows_only_its_own_message(tmp_path, store_url, cleanup):
    point, log = tmp_path / "mnt", tmp_path / "log"
    first = mount_cli(point, "sqlite://relative.db", log)
    second = mount_cli(point, store_url, log, "--agent", "no/slash")
    if second.returncode == 0:
        cleanup.append((point, daemon_of(second)))
    assert "absolute" not in second.stderr
    one_line_error(first, "must be absolute")
    one_line_error(second, "no/slash")


def test_benchmarks_report_help():
    result = subprocess.run([sys.executable, "-m", "benchmarks.report", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result
    missing = subprocess.run([sys.executable, "-m", "benchmarks.report", "/nonexistent.json"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    one_line_error(missing, "/nonexistent.json")
