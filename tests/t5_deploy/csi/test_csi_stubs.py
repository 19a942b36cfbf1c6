"""The committed stubs are what grpcio-tools makes from the committed .proto,
and the .proto keeps the CSI spec's names and field numbers."""

import importlib.util
import pathlib

import pytest

from tests.harness import CSI_DIR
from lighthouse_csi import csi_pb2

pytest.importorskip("grpc_tools")


def _generate(out: pathlib.Path) -> None:
    spec = importlib.util.spec_from_file_location("csi_generate", CSI_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out)


@pytest.mark.parametrize("name", ["csi_pb2.py", "csi_pb2_grpc.py"])
def test_committed_stubs_match_regenerated(tmp_path, name):
    _generate(tmp_path)
    fresh = (tmp_path / "lighthouse_csi" / name).read_text()
    committed = (CSI_DIR / "lighthouse_csi" / name).read_text()
    assert fresh == committed, (
        f"{name} is stale: run `python csi-driver/generate.py` (with the pinned grpcio-tools)")


# (message, field, number) from the CSI v1 spec's csi.proto: a typo in our
# transcription would make kubelet's fields land in the wrong place.
SPEC_FIELDS = [
    ("GetPluginInfoResponse", "name", 1), ("GetPluginInfoResponse", "vendor_version", 2),
    ("GetPluginInfoResponse", "manifest", 3),
    ("GetPluginCapabilitiesResponse", "capabilities", 1), ("ProbeResponse", "ready", 1),
    ("CreateVolumeRequest", "name", 1), ("CreateVolumeRequest", "capacity_range", 2),
    ("CreateVolumeRequest", "volume_capabilities", 3), ("CreateVolumeRequest", "parameters", 4),
    ("CreateVolumeRequest", "secrets", 5), ("CreateVolumeResponse", "volume", 1),
    ("Volume", "capacity_bytes", 1), ("Volume", "volume_id", 2), ("Volume", "volume_context", 3),
    ("DeleteVolumeRequest", "volume_id", 1), ("DeleteVolumeRequest", "secrets", 2),
    ("ValidateVolumeCapabilitiesRequest", "volume_id", 1),
    ("ValidateVolumeCapabilitiesRequest", "volume_context", 2),
    ("ValidateVolumeCapabilitiesRequest", "volume_capabilities", 3),
    ("ValidateVolumeCapabilitiesRequest", "parameters", 4),
    ("ValidateVolumeCapabilitiesRequest", "secrets", 5),
    ("ValidateVolumeCapabilitiesResponse", "confirmed", 1),
    ("ValidateVolumeCapabilitiesResponse", "message", 2),
    ("ControllerGetCapabilitiesResponse", "capabilities", 1),
    ("VolumeCapability", "block", 1), ("VolumeCapability", "mount", 2),
    ("VolumeCapability", "access_mode", 3),
    ("NodePublishVolumeRequest", "volume_id", 1), ("NodePublishVolumeRequest", "publish_context", 2),
    ("NodePublishVolumeRequest", "staging_target_path", 3),
    ("NodePublishVolumeRequest", "target_path", 4),
    ("NodePublishVolumeRequest", "volume_capability", 5),
    ("NodePublishVolumeRequest", "readonly", 6), ("NodePublishVolumeRequest", "secrets", 7),
    ("NodePublishVolumeRequest", "volume_context", 8),
    ("NodeUnpublishVolumeRequest", "volume_id", 1), ("NodeUnpublishVolumeRequest", "target_path", 2),
    ("NodeGetCapabilitiesResponse", "capabilities", 1),
    ("NodeGetInfoResponse", "node_id", 1), ("NodeGetInfoResponse", "max_volumes_per_node", 2),
]


@pytest.mark.parametrize("message,field,number", SPEC_FIELDS)
def test_field_numbers_follow_the_spec(message, field, number):
    assert csi_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_package_services_and_secret_option():
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"
    assert set(csi_pb2.DESCRIPTOR.services_by_name) == {"Identity", "Controller", "Node"}
    assert csi_pb2.csi_secret.number == 1059
    secrets = csi_pb2.NodePublishVolumeRequest.DESCRIPTOR.fields_by_name["secrets"]
    assert secrets.GetOptions().Extensions[csi_pb2.csi_secret]
