"""systemd/: the unit passes `systemd-analyze verify`, the daemon keeps the
Type=notify contract the unit relies on, and the mount helper makes
`mount -t fuse.lighthouse` and fstab lines work, on real mounts."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.harness.mounts import mounts_under
from tests.harness import REPO, SYSTEMD_DIR

UNIT = SYSTEMD_DIR / "lighthousefs@.service"
HELPER = SYSTEMD_DIR / "mount.fuse.lighthouse"
INSTANCE = "lighthousefs@mnt-lighthouse.service"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")
needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) and namespaces need root here")


def verify(unit_text: str, tmp_path, lighthouse_bin: str) -> subprocess.CompletedProcess:
    """Run systemd-analyze verify on an instance of the template. verify
    insists that ExecStart's binary exists, so the installed path is pointed
    at this checkout's `lighthouse`; nothing else of the unit changes."""
    unit_dir = tmp_path / "units"
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / UNIT.name).write_text(unit_text.replace("/usr/local/bin/lighthouse", lighthouse_bin))
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_LEVEL="notice")
    return subprocess.run(["systemd-analyze", "verify", INSTANCE], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)


def our_complaints(result) -> list[str]:
    # Ignore remarks about the host's own units; keep every line about ours.
    return [line for line in (result.stdout + result.stderr).splitlines() if "lighthousefs" in line]


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path, lighthouse_bin):
    result = verify(UNIT.read_text(), tmp_path, lighthouse_bin)
    assert result.returncode == 0 and our_complaints(result) == [], result.stderr


@needs_analyze
@pytest.mark.parametrize("breakage", [
    ("Type=notify", "Type=notifyy"),
    ("NoNewPrivileges=yes", "NoNewPrivileges=yes\nBogusKey=1"),
    ("ExecStart=/usr/local/bin/lighthouse", "ExecStart=/nonexistent/lighthouse"),
])
def test_verify_is_not_vacuous(tmp_path, lighthouse_bin, breakage):
    old, new = breakage
    text = UNIT.read_text()
    assert old in text
    result = verify(text.replace(old, new), tmp_path, lighthouse_bin)
    assert result.returncode != 0 or our_complaints(result)


def test_unit_has_the_promised_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, value)
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "on-failure"
    assert "--foreground" in settings["ExecStart"]
    assert settings["NoNewPrivileges"] == "yes"
    # Each of these would hide the FUSE mount in a private mount namespace.
    for key in ("ProtectSystem", "PrivateTmp", "ProtectHome", "ReadWritePaths",
                "ProtectKernelModules", "PrivateDevices", "ProtectControlGroups"):
        assert key not in settings


def test_the_store_url_is_a_credential_never_in_argv():
    """The URL may hold a password: systemd hands it over as a credential file,
    ExecStart never names it (every user can read a process's argv)."""
    lines = [line for line in UNIT.read_text().splitlines() if not line.startswith("#")]
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert "--store" not in exec_start and "LIGHTHOUSE_STORE" not in exec_start
    assert any(line.startswith("LoadCredential=store:/") for line in lines)
    assert any(line.startswith("SetCredential=store:sqlite:///") for line in lines)   # the fallback
    assert not any(line.startswith("Environment=LIGHTHOUSE_STORE") for line in lines)


@pytest.mark.mount
@needs_fuse
def test_daemon_notifies_ready_only_when_the_mount_answers(base, lighthouse_bin):
    """What Type=notify relies on: READY=1 from the main process once the
    mount answers, and a clean unmount on SIGTERM (the unit's stop)."""
    notify_path = base / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(60)
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    proc = subprocess.Popen(
        [lighthouse_bin, "mount", str(mountpoint), "--foreground", "--agent", "alice",
         "--store", f"sqlite://{base / 'store.db'}"],
        env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        message = sock.recv(4096).decode()
        assert "READY=1" in message
        # At the moment READY=1 arrives, the mount already answers.
        with open(mountpoint / ".lighthouse" / "health") as f:
            assert json.load(f)["agent"] == "alice"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert mounts_under(str(mountpoint)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def _health(mountpoint) -> dict:
    with open(os.path.join(mountpoint, ".lighthouse", "health")) as f:
        return json.load(f)


def _wait_gone(pid) -> None:
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"daemon {pid} still runs after umount")


@pytest.mark.mount
@needs_fuse
@needs_root
def test_helper_mounts_with_options(base, lighthouse_bin):
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    store = f"sqlite://{base / 'store.db'}"
    result = subprocess.run(
        [str(HELPER), store, str(mountpoint), "-o", "rw,agent=bob,_netdev,nofail,x-systemd.automount,ro"],
        env=dict(os.environ, LIGHTHOUSE_BIN=lighthouse_bin), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    health = _health(mountpoint)
    assert (health["agent"], health["read_only"], health["store"]) == ("bob", True, store)
    assert os.listdir(mountpoint / "projects") == []
    with pytest.raises(OSError):
        (mountpoint / "projects" / "x").mkdir()
    assert subprocess.run(["umount", str(mountpoint)], timeout=60).returncode == 0
    _wait_gone(health["pid"])


@pytest.mark.mount
@needs_fuse
@needs_root
def test_helper_takes_the_store_from_a_file_and_passes_it_by_environment(base, lighthouse_bin):
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    store = f"sqlite://{base / 'store.db'}"
    secret = base / "store-url"
    secret.write_text(store + "\n")
    for source, option in (("lighthouse", f"store_file={secret}"), (store, "agent=bob")):
        result = subprocess.run([str(HELPER), source, str(mountpoint), "-o", option],
                                env=dict(os.environ, LIGHTHOUSE_BIN=lighthouse_bin),
                                capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        health = _health(mountpoint)
        assert health["store"] == store
        assert store.encode() not in open(f"/proc/{health['pid']}/cmdline", "rb").read()
        assert subprocess.run(["umount", str(mountpoint)], timeout=60).returncode == 0
        _wait_gone(health["pid"])


@pytest.mark.parametrize("args", [
    ["sqlite:///tmp/x.db", "{mnt}", "-o", "agent=bob,readonly"],   # typo: refused, not rw
    ["/var/lib/not-a-url.db", "{mnt}"],
    ["sqlite:///tmp/x.db"],
])
def test_helper_refuses_bad_input(base, lighthouse_bin, args):
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    argv = [str(HELPER)] + [a.format(mnt=mountpoint) for a in args]
    result = subprocess.run(argv, env=dict(os.environ, LIGHTHOUSE_BIN=lighthouse_bin),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and result.stderr
    assert mounts_under(str(base)) == []


@pytest.mark.mount
@needs_fuse
@needs_root
def test_mount_t_fuse_lighthouse_and_fstab(base, lighthouse_bin):
    """The real mount(8): in a private mount namespace where /sbin (this
    Debian's /usr/sbin) holds only our helper, so nothing is installed on the
    host. Both `mount -t fuse.lighthouse` and an fstab line (mount -T)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    sbin = os.path.realpath("/sbin")
    one, two = base / "one", base / "two"
    one.mkdir()
    two.mkdir()
    store = f"sqlite://{base / 'store.db'}"
    fstab = base / "fstab"
    fstab.write_text(f"# lighthouse\n{store}  {two}  fuse.lighthouse  agent=carol,ro,_netdev,nofail  0 0\n")
    script = f"""
set -eu
trap 'umount {one} 2>/dev/null; umount {two} 2>/dev/null' EXIT
mount --make-rprivate /
mount -t tmpfs tmpfs {sbin}
cp {HELPER} {sbin}/mount.fuse.lighthouse
export LIGHTHOUSE_BIN={lighthouse_bin}
mount -t fuse.lighthouse -o agent=alice {store} {one}
mkdir {one}/projects/demo
echo hello > {one}/projects/demo/README.md
cat {one}/.lighthouse/health
echo ---
mount -T {fstab} {two}
cat {two}/projects/demo/README.md
cat {two}/.lighthouse/health
"""
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    first, _, second = result.stdout.partition("---\n")
    assert json.loads(first)["agent"] == "alice"
    readme, _, health = second.partition("\n")
    assert readme == "hello"
    assert json.loads(health)["agent"] == "carol" and json.loads(health)["read_only"] is True
    assert mounts_under(str(base)) == []  # the namespace never leaked a mount
