"""CSI Identity service: who the plugin is and whether it is ready."""

import os

from google.protobuf import wrappers_pb2

from lighthouse_csi import VERSION, csi_pb2, csi_pb2_grpc
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
        # Ready when it can do its job: run the daemon, and keep its state.
        ready = self.config.lighthouse.available() and os.access(self.config.state_dir, os.W_OK)
        if self.config.node and not os.path.exists("/dev/fuse"):
            ready = False
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=ready))
