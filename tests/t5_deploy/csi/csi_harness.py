"""Helpers of the CSI driver tests: the driver as a real process on a unix
socket in a temp dir, and a gRPC client from the committed stubs. (Mounts,
the mount table and unmounting are tests.harness's, shared with the other
suites. A module name of its own: several conftest.py files exist, so
`from conftest import` would be ambiguous.)"""

import pathlib
import shlex
import signal
import subprocess
import sys
import time

import grpc
import pytest

from lighthouse_csi import csi_pb2, csi_pb2_grpc   # csi-driver/ is on pytest's pythonpath
from tests.harness import CSI_DIR
from tests.harness.mounts import lighthouse_cmd, lighthouse_env

LIGHTHOUSE_CMD = shlex.join(lighthouse_cmd())


def env_with_paths() -> dict:
    """Our environment, with this checkout's lighthousefs and CSI driver importable."""
    return lighthouse_env(None, CSI_DIR)


class Driver:
    """The driver process and its clients. Restartable: state stays on disk."""

    def __init__(self, base: pathlib.Path, lighthouse_cmd: str = LIGHTHOUSE_CMD,
                 mode: str = "all", fuse_device: str = "/dev/fuse", store: str | None = None):
        self.base = base
        self.socket = base / "csi" / "csi.sock"
        self.state_dir = base / "state"
        self.kubelet = base / "kubelet"
        self.store = store or f"sqlite://{base / 'store' / 'lighthouse.db'}"
        self.lighthouse_cmd = lighthouse_cmd
        self.mode = mode
        self.fuse_device = fuse_device
        self.log = base / "driver.log"
        self.proc = None
        self.channel = None
        (base / "store").mkdir(exist_ok=True)
        self.kubelet.mkdir(exist_ok=True)

    def start(self) -> None:
        argv = [sys.executable, "-m", "lighthouse_csi", "--endpoint", f"unix://{self.socket}",
                "--mode", self.mode, "--node-id", "test-node", "--state-dir", str(self.state_dir),
                "--allowed-root", str(self.kubelet),
                "--lighthouse-cmd", self.lighthouse_cmd, "--fuse-device", self.fuse_device,
                "--log-level", "DEBUG"]
        with open(self.log, "ab") as log:
            # The store URL by the environment, as the manifests give it (a Secret).
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(env_with_paths(), LIGHTHOUSE_STORE=self.store))
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        try:
            grpc.channel_ready_future(self.channel).result(timeout=20)
        except grpc.FutureTimeoutError:
            raise AssertionError(f"driver did not start; log:\n{self.log_text()}") from None
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, sig=signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def call(self, method, request, retries: int = 50):
        """Call, retrying while the volume is busy (ABORTED), as a CO does."""
        for _ in range(retries):
            try:
                return method(request, timeout=90)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ABORTED:
                    raise
                time.sleep(0.2)
        return method(request, timeout=90)


def mount_cap(mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER):
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()
