"""CSI Node service: publish a lighthouse volume at a pod's target path.

Per volume, the agent's view of the whole namespace is mounted once at a
private staging dir under the state dir (`lighthouse mount`), and each target
path gets a bind mount of staging/projects/<project>[/<subpath>], read-only
when asked. The last unpublish of a volume unmounts its staging dir.

A staging mount whose daemon died is detected (its health file does not
read) and repaired on the next publish of that volume, and at driver start:
every bind made from it is dead too, so all of them are unmounted, the
namespace is mounted again and the binds are remade.
"""

import errno
import logging
import os
import threading

from lighthouse_csi import csi_pb2, csi_pb2_grpc, mounts, validate, volumes
from lighthouse_csi.errors import AlreadyExists, CsiError, InvalidArgument, NotFound
from lighthouse_csi.rpc import rpc
from lighthouse_csi.state import State

log = logging.getLogger(__name__)
_SPEC_KEYS = ("project", "agent", "subpath", "readOnly")


def _spec(volume: volumes.Volume) -> dict:
    return {"project": volume.project, "agent": volume.agent,
            "subpath": volume.subpath, "readOnly": volume.read_only}


class Node(csi_pb2_grpc.NodeServicer):
    def __init__(self, config, locks):
        self.config = config
        self.locks = locks
        self.lighthouse = config.lighthouse
        self.state = State(os.path.join(config.state_dir, "node-state.json"))
        self.staging_root = os.path.join(config.state_dir, "staging")

    # ---- RPCs ----

    @rpc(lock_key=lambda r: r.volume_id)
    def NodePublishVolume(self, request):
        vid = validate.volume_id(request.volume_id)
        target = validate.target_path(request.target_path, self.config.allowed_root)
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        mode_read_only = validate.capability(request.volume_capability)
        volume = volumes.from_context(request.volume_context, vid)
        read_only = request.readonly or mode_read_only or volume.read_only
        self._check_compatible(vid, target, _spec(volume), read_only)

        # Write-ahead: record the target before mounting anything.
        with self.state.edit() as data:
            record = data["volumes"].setdefault(
                vid, {**_spec(volume), "staging": os.path.join(self.staging_root, vid),
                      "targets": {}})
            record["targets"][target] = {"readonly": read_only}
        try:
            self._ensure(vid)
        except BaseException:
            self._forget(vid, target)  # nothing stays mounted for a failed publish
            raise
        return csi_pb2.NodePublishVolumeResponse()

    @rpc(lock_key=lambda r: r.volume_id)
    def NodeUnpublishVolume(self, request):
        vid = validate.volume_id(request.volume_id)
        target = validate.target_path(request.target_path, self.config.allowed_root)
        self._forget(vid, target)
        try:
            os.rmdir(target)  # the CO may have made it; it is empty after unmount
        except OSError:
            pass
        return csi_pb2.NodeUnpublishVolumeResponse()

    @rpc()
    def NodeGetCapabilities(self, request):
        # No STAGE_UNSTAGE_VOLUME: staging is private to the driver.
        return csi_pb2.NodeGetCapabilitiesResponse()

    @rpc()
    def NodeGetInfo(self, request):
        return csi_pb2.NodeGetInfoResponse(node_id=self.config.node_id)

    # ---- helpers (called with the volume's lock held) ----

    def _check_compatible(self, vid: str, target: str, spec: dict, read_only: bool) -> None:
        volumes_ = self.state.read()["volumes"]
        for other, record in volumes_.items():
            if other != vid and target in record["targets"]:
                raise AlreadyExists(f"target {target} is in use by volume {other!r}")
        record = volumes_.get(vid)
        if record is not None:
            if {k: record[k] for k in _SPEC_KEYS} != spec:
                raise AlreadyExists(f"volume {vid!r} is already published with another context")
            known = record["targets"].get(target)
            if known is not None and known["readonly"] != read_only:
                raise AlreadyExists(f"volume {vid!r} is already published at {target} "
                                    f"with readonly={known['readonly']}")
            if known is not None:
                return
        if mounts.is_mount_point(target):
            raise AlreadyExists(f"target {target} already has a mount this driver did not make")

    def _ensure(self, vid: str) -> None:
        """Make the volume's staging mount answer and every recorded target
        bound from it; repair a dead staging mount and its binds."""
        record = self.state.read()["volumes"][vid]
        staging = record["staging"]
        if not self.lighthouse.healthy(staging):
            if mounts.is_mount_point(staging) or any(map(mounts.is_mount_point, record["targets"])):
                log.warning("volume %s: namespace mount at %s does not answer; repairing",
                            vid, staging)
            for target in record["targets"]:
                mounts.unmount(target)  # binds of a dead mount are dead too
            self.lighthouse.umount(staging)
            self.lighthouse.mount(staging, record["agent"], record["readOnly"])
        # Agents can make symlinks in a project: one on the way must not bind
        # a host directory into the pod. So the source is opened component by
        # component without following symlinks, and that very directory is bound.
        relative = os.path.join(record["project"], record["subpath"])
        try:
            source = mounts.open_beneath(os.path.join(staging, "projects"), relative)
        except FileNotFoundError:
            raise NotFound(f"project {record['project']!r}"
                           + (f" has no subpath {record['subpath']!r}" if record["subpath"]
                              else " does not exist")) from None
        except OSError as err:
            if err.errno in (errno.ENOTDIR, errno.ELOOP):
                raise InvalidArgument(f"volume {vid!r}: {relative!r} is a symlink or a file; "
                                      "only real directories can be published") from None
            raise
        try:
            for target, options in record["targets"].items():
                if not mounts.is_mount_point(target):
                    os.makedirs(target, exist_ok=True)
                    mounts.bind(source, target, options["readonly"])
        finally:
            os.close(source)

    def _forget(self, vid: str, target: str) -> None:
        """Drop target from the volume; after its last target, unmount the
        namespace and drop the volume (in that order: write-behind)."""
        mounts.unmount(target)   # checks first: nothing to do if not mounted
        with self.state.edit() as data:
            record = data["volumes"].get(vid)
            if record is None:
                return
            record["targets"].pop(target, None)
            if record["targets"]:
                return
        self.lighthouse.umount(record["staging"])
        try:
            os.rmdir(record["staging"])
        except OSError:
            pass
        with self.state.edit() as data:
            record = data["volumes"].get(vid)
            if record is not None and not record["targets"]:  # no publish came meanwhile
                del data["volumes"][vid]

    def recover(self) -> None:
        """At driver start: repair every known volume (mounts may have died
        with the previous driver's container) and finish half-done unpublishes."""
        for vid, record in self.state.read()["volumes"].items():
            try:
                with self.locks.hold(vid):
                    if record["targets"]:
                        self._ensure(vid)
                    else:
                        self._forget(vid, "")
            except CsiError as err:
                log.warning("volume %s: recovery failed: %s", vid, err)
            except Exception:  # noqa: BLE001 - one bad volume must not stop the others
                log.exception("volume %s: recovery failed", vid)

    def start_recovery(self) -> threading.Thread:
        thread = threading.Thread(target=self.recover, name="recover", daemon=True)
        thread.start()
        return thread
