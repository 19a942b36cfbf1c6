"""CSI Identity service: who the plugin is and whether it is ready."""

import os

from google.protobuf import wrappers_pb2

from lighthouse_csi import VERSION, csi_pb2, csi_pb2_grpc
from lighthouse_csi.errors import FailedPrecondition
from lighthouse_csi.rpc import rpc

Service = csi_pb2.PluginCapability.Service


class Identity(csi_pb2_grpc.IdentityServicer):
    def __init__(self, config, locks):
        self.config = config
        self.locks = locks

    @rpc()
    def GetPluginInfo(self, request):
        return csi_pb2.GetPluginInfoResponse(name=self.config.driver_name, vendor_version=VERSION)

    @rpc()
    def GetPluginCapabilities(self, request):
        # The plugin as a whole has a controller service, even in the node-only
        # process of the DaemonSet: capabilities describe the plugin.
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=[
            csi_pb2.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE))])

    @rpc()
    def Probe(self, request):
        # Healthy when it can do its job: mount (in every mode: the node mounts
        # volumes, the controller its namespace) and keep its state. The CSI
        # spec asks an unhealthy plugin for FAILED_PRECONDITION; ready=false
        # would mean "still starting", which this plugin never is once it serves.
        self.config.lighthouse.check_mountable()
        if not os.access(self.config.state_dir, os.W_OK):
            raise FailedPrecondition(f"the state dir {self.config.state_dir} is not writable")
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
