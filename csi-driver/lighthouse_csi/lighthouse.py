"""The lighthouse daemon, driven through its command line (the contract with
the core package): `lighthouse mount MOUNTPOINT --agent ID [--read-only]`, with
the store URL in $LIGHTHOUSE_STORE, returns once the mount answers;
`lighthouse umount MOUNTPOINT`.

The daemon is a separate process, so mounts outlive a restart of the driver.
"""

import logging
import os
import shlex
import shutil
import subprocess
import threading

from lighthouse_csi import mounts
from lighthouse_csi.errors import FailedPrecondition, MountFailed
from lighthouse_csi.rpc import redact_url

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
MOUNT_TIMEOUT = 60  # a cold start against a remote store may take a while
HEALTH_TIMEOUT = 5


class Lighthouse:
    def __init__(self, command: str, store: str, fuse_device: str = FUSE_DEVICE):
        """command: how to run the CLI, e.g. 'lighthouse' or
        'python3 -m lighthousefs.cli'; store: the store URL for every mount;
        fuse_device: the device every mount needs (another path only in tests)."""
        self.argv = shlex.split(command)
        self.store = store
        self.fuse_device = fuse_device

    def check_mountable(self) -> None:
        """FailedPrecondition when this machine cannot mount at all (no CLI, no
        FUSE device): retrying will not help until an operator acts."""
        if shutil.which(self.argv[0]) is None:
            raise FailedPrecondition(f"the lighthouse CLI {self.argv[0]!r} is not installed")
        if not os.path.exists(self.fuse_device):
            raise FailedPrecondition(f"{self.fuse_device} is missing: FUSE is not available here")

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        argv = self.argv + args
        # The store URL (it may hold a password) goes by the environment, never
        # argv, which every user of the node can read; a credentials directory
        # of our own must not win over it.
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        env["LIGHTHOUSE_STORE"] = self.store
        try:
            # stdin closed and own session: the daemon it leaves behind must
            # not hold our pipes or receive our signals.
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, check=False, start_new_session=True)
        except subprocess.TimeoutExpired as err:
            raise MountFailed(f"lighthouse {args[0]} timed out after {timeout}s") from err
        except OSError as err:
            raise MountFailed(f"cannot run {self.argv[0]}: {err}") from err

    def mount(self, mountpoint: str, agent: str, read_only: bool) -> None:
        """Mount the agent's view of the whole namespace; returns when it answers.
        FailedPrecondition as check_mountable() says."""
        self.check_mountable()
        os.makedirs(mountpoint, exist_ok=True)
        args = ["mount", mountpoint, "--agent", agent]
        if read_only:
            args.append("--read-only")
        result = self._run(args, MOUNT_TIMEOUT)
        if result.returncode != 0:
            detail = redact_url((result.stderr or result.stdout).strip())
            raise MountFailed(f"lighthouse mount at {mountpoint} failed: {detail}")
        if not self.healthy(mountpoint):
            raise MountFailed(f"lighthouse mount at {mountpoint} returned but does not answer")

    def umount(self, mountpoint: str) -> None:
        """Unmount cleanly; if the daemon is dead or refuses, detach lazily."""
        if not mounts.is_mount_point(mountpoint):
            return
        result = self._run(["umount", mountpoint], MOUNT_TIMEOUT)
        if result.returncode != 0 or mounts.is_mount_point(mountpoint):
            log.warning("lighthouse umount %s failed (%s); detaching", mountpoint,
                        redact_url(result.stderr.strip()))
            mounts.detach_fuse(mountpoint)

    @staticmethod
    def healthy(mountpoint: str) -> bool:
        """True when mountpoint is a mount whose daemon answers: its
        .lighthouse/health file reads within HEALTH_TIMEOUT.

        The read runs in a daemon thread: a dead daemon fails at once
        (ENOTCONN) but a hung one would block its caller forever."""
        if not mounts.is_mount_point(mountpoint):
            return False
        outcome = []

        def probe():
            try:
                with open(os.path.join(mountpoint, ".lighthouse", "health"), "rb") as f:
                    f.read(4096)
                outcome.append(True)
            except OSError:
                outcome.append(False)

        thread = threading.Thread(target=probe, daemon=True, name="health-probe")
        thread.start()
        thread.join(HEALTH_TIMEOUT)
        return bool(outcome and outcome[0])
