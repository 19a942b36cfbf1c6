"""CSI Controller service: provisioning of persistent volumes.

CreateVolume makes the project (and subpath) through one long-lived mount of
the whole namespace under the state dir, made on first use and remade if its
daemon died; DeleteVolume removes the project only when the StorageClass said
onDelete: delete (recorded in the volume id), never otherwise.
"""

import errno
import logging
import os
import shutil
import threading

from lighthouse_csi import csi_pb2, csi_pb2_grpc, mounts, validate, volumes
from lighthouse_csi.errors import InvalidArgument, NotFound
from lighthouse_csi.rpc import rpc

log = logging.getLogger(__name__)
RPC = csi_pb2.ControllerServiceCapability.RPC
PVC_NAME = "csi.storage.k8s.io/pvc/name"


class Controller(csi_pb2_grpc.ControllerServicer):
    def __init__(self, config, locks):
        self.config = config
        self.locks = locks
        self.lighthouse = config.lighthouse
        self.mountpoint = os.path.join(config.state_dir, "controller-namespace")
        self._mount_lock = threading.Lock()  # the one namespace mount, made once

    def _projects(self) -> str:
        """Path of projects/ in a mount that answers, mounting if needed."""
        with self._mount_lock:
            if not self.lighthouse.healthy(self.mountpoint):
                self.lighthouse.umount(self.mountpoint)  # no-op unless a dead mount is left
                self.lighthouse.mount(self.mountpoint, self.config.controller_agent, read_only=False)
        return os.path.join(self.mountpoint, "projects")

    def close(self) -> None:
        with self._mount_lock:
            self.lighthouse.umount(self.mountpoint)

    @rpc(lock_key=lambda r: r.name)
    def CreateVolume(self, request):
        if not request.name:
            raise InvalidArgument("name is required")
        validate.capabilities(request.volume_capabilities)
        # The project defaults to the PVC's name (passed by csi-provisioner
        # --extra-create-metadata), else to the CO's volume name.
        default_project = next((n for n in (request.parameters.get(PVC_NAME), request.name)
                                if n and validate.is_name(n)), "")
        volume, policy = volumes.from_parameters(request.parameters, default_project)
        # Idempotent: an existing project (or subpath) is taken as it is, so a
        # retried call, or a PVC naming an existing project, both succeed.
        # Walked without following symlinks: a symlink an agent made in the
        # project must not make us create directories outside the namespace.
        try:
            os.close(mounts.open_beneath(self._projects(),
                                         os.path.join(volume.project, volume.subpath), create=True))
        except OSError as err:
            if err.errno in (errno.ENOTDIR, errno.ELOOP):
                raise InvalidArgument(f"{volume.project}/{volume.subpath} is a symlink or a file, "
                                      "not a directory") from None
            raise
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
            volume_id=volumes.make_id(volume.project, policy, request.name),
            capacity_bytes=request.capacity_range.required_bytes,
            volume_context=volume.context()))

    @rpc(lock_key=lambda r: r.volume_id)
    def DeleteVolume(self, request):
        validate.volume_id(request.volume_id)
        project, policy = volumes.parse_id(request.volume_id)
        if policy == "delete":
            path = os.path.join(self._projects(), validate.name("project", project))
            if os.path.isdir(path):
                log.info("removing project %s (volume %s has onDelete: delete)",
                         project, request.volume_id)
                shutil.rmtree(path)
        else:
            log.info("volume %s deleted; its project %r is kept (onDelete: retain)",
                     request.volume_id, project)
        return csi_pb2.DeleteVolumeResponse()

    @rpc(lock_key=lambda r: r.volume_id)
    def ValidateVolumeCapabilities(self, request):
        # A malformed request is refused before _projects(), which mounts; unsupported
        # capabilities only after it, so that a missing volume is NOT_FOUND first.
        validate.volume_id(request.volume_id)
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities are required")
        volume = volumes.from_context(request.volume_context, request.volume_id)
        if not os.path.isdir(os.path.join(self._projects(), volume.project, volume.subpath)):
            raise NotFound(f"project {volume.project!r} (subpath {volume.subpath!r}) does not exist")
        try:
            validate.capabilities(request.volume_capabilities)
        except InvalidArgument as err:
            # Unsupported capabilities are an answer here, not an error.
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=str(err))
        return csi_pb2.ValidateVolumeCapabilitiesResponse(
            confirmed=csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context,
                volume_capabilities=request.volume_capabilities,
                parameters=request.parameters))

    @rpc()
    def ControllerGetCapabilities(self, request):
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=RPC(type=RPC.CREATE_DELETE_VOLUME))])
