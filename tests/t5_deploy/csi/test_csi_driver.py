"""The driver as a process on a unix socket, called through the generated
stubs: identity, capabilities, and every error that must be caught before
anything is mounted. (Real mounts: test_csi_mount.py.)"""

import concurrent.futures
import json
import shlex

import grpc
import pytest

from csi_harness import code_of, mount_cap
from tests.harness.mounts import eventually, mounts_under
from lighthouse_csi import DRIVER_NAME, csi_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def gated_failing_cli(gate) -> str:
    """A stand-in CLI whose mount touches gate/<mountpoint name>.started, waits
    for gate/open (30 s at most, so it never outlives the test), then fails:
    a volume stays busy exactly as long as the test wants, and a failed mount
    must leave nothing behind. (Publish itself is tested on real mounts.)"""
    script = gate / "lighthouse"
    script.write_text(f"#!/bin/sh\ngate={shlex.quote(str(gate))}\n"
                      'touch "$gate/$(basename "$2").started"\n'
                      'for _ in $(seq 600); do [ -e "$gate/open" ] && break; sleep 0.05; done\n'
                      "echo 'mount failed: store redis://:hunter2@h:1/0 down' >&2\n"
                      "exit 3\n")
    script.chmod(0o755)
    return str(script)


def publish_request(driver, **overrides):
    fields = dict(volume_id="vol1", target_path=str(driver.kubelet / "pods" / "p1" / "mount"),
                  volume_capability=mount_cap(), volume_context={"project": "alpha", "agent": "bot"})
    fields.update(overrides)
    return csi_pb2.NodePublishVolumeRequest(**fields)


def assert_nothing_mounted(driver):
    assert mounts_under(str(driver.base)) == []
    state = driver.state_dir / "node-state.json"
    if state.exists():
        assert json.loads(state.read_text())["volumes"] == {}


def test_identity(make_driver):
    driver = make_driver()
    info = driver.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == DRIVER_NAME and info.vendor_version
    assert driver.identity.Probe(csi_pb2.ProbeRequest()).ready.value is True
    caps = driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    assert [c.service.type for c in caps.capabilities] == [
        csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE]


# What a machine that cannot mount lacks: the CLI, or the FUSE device.
CANNOT_MOUNT = [{"lighthouse_cmd": "/nonexistent/lighthouse"}, {"fuse_device": "/nonexistent/fuse"}]


@pytest.mark.parametrize("mode", ["node", "controller"])
@pytest.mark.parametrize("missing", CANNOT_MOUNT, ids=["no-cli", "no-fuse"])
def test_probe_is_a_failed_precondition_when_it_cannot_mount(make_driver, mode, missing):
    driver = make_driver(mode=mode, **missing)
    with pytest.raises(grpc.RpcError) as info:
        driver.identity.Probe(csi_pb2.ProbeRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/nonexistent/" in info.value.details()


def test_a_probe_failing_again_and_again_is_a_warning_once(make_driver):
    """The kubelet probes every few seconds: one WARNING for a sick node, not one a probe.
    (The driver logs at DEBUG here, so every line is in its log, with its level.)"""
    driver = make_driver(mode="node", fuse_device="/nonexistent/fuse")
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            driver.identity.Probe(csi_pb2.ProbeRequest())
    lines = driver.log_text().splitlines()
    failures = [line.split()[2] for line in lines if ": Probe failed" in line]
    assert failures == ["WARNING", "DEBUG", "DEBUG"]
    assert {line.split()[2] for line in lines if ": Probe request" in line} == {"DEBUG"}


@pytest.mark.parametrize("missing", CANNOT_MOUNT, ids=["no-cli", "no-fuse"])
def test_cannot_mount_is_a_failed_precondition(make_driver, missing):
    driver = make_driver(**missing)
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(lambda: driver.node.NodePublishVolume(publish_request(driver))) == precondition
    assert code_of(lambda: driver.controller.CreateVolume(csi_pb2.CreateVolumeRequest(
        name="pvc-1", volume_capabilities=[mount_cap()], parameters={"agent": "a"}))) == precondition
    assert_nothing_mounted(driver)


def test_capabilities_and_node_info(make_driver):
    driver = make_driver()
    caps = driver.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in caps.capabilities] == [
        csi_pb2.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME]
    assert list(driver.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest()).capabilities) == []
    assert driver.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest()).node_id == "test-node"


@pytest.mark.parametrize("overrides", [
    {"volume_id": ""},
    {"volume_id": "../../etc"},
    {"volume_id": "a/b"},
    {"target_path": "/etc/lighthouse-target"},
    {"target_path": "relative/target"},
    {"target_path": "{kubelet}/pods/../../escape"},
    {"volume_context": {"project": "alpha"}},                          # no agent
    {"volume_context": {"agent": "bot"}},                              # no project
    {"volume_context": {"project": "..", "agent": "bot"}},
    {"volume_context": {"project": "alpha", "agent": "bot", "subpath": "../beta"}},
    {"volume_context": {"project": "alpha", "agent": "bot", "readonly": "true"}},  # typo
    {"volume_context": {"project": "alpha", "agent": "operator"}},       # the core refuses these names
    {"volume_context": {"project": "alpha", "agent": "shared"}},
    {"volume_capability": None},
    {"volume_capability": csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=mount_cap().access_mode)},
])
def test_publish_rejects_bad_input_and_mounts_nothing(shared_driver, overrides):
    driver = shared_driver
    if "target_path" in overrides:
        overrides["target_path"] = overrides["target_path"].format(kubelet=driver.kubelet)
    if overrides.get("volume_capability", 0) is None:
        del overrides["volume_capability"]
        request = publish_request(driver, **overrides)
        request.ClearField("volume_capability")
    else:
        request = publish_request(driver, **overrides)
    assert code_of(lambda: driver.node.NodePublishVolume(request)) == INVALID
    assert_nothing_mounted(driver)


def test_unpublish_of_a_path_not_mounted_succeeds(make_driver):
    driver = make_driver()
    target = driver.kubelet / "pods" / "p9" / "mount"
    driver.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id="never-published", target_path=str(target)))
    target.mkdir(parents=True)
    driver.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id="never-published", target_path=str(target)))
    assert not target.exists()  # the empty target dir is cleaned up
    assert code_of(lambda: driver.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id="v", target_path="/etc"))) == INVALID
    assert code_of(lambda: driver.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id="x/..", target_path=str(target)))) == INVALID


@pytest.mark.parametrize("request_", [
    csi_pb2.CreateVolumeRequest(name="", volume_capabilities=[mount_cap()], parameters={"agent": "a"}),
    csi_pb2.CreateVolumeRequest(name="pvc-1", parameters={"agent": "a"}),   # no capabilities
    csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[mount_cap()]),  # no agent
    csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[mount_cap()],
                                parameters={"agent": "a", "project": "../x"}),
    csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[mount_cap()],
                                parameters={"agent": "a", "deleteProject": "true"}),  # unknown
    csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[mount_cap()],
                                parameters={"agent": "a", "onDelete": "sometimes"}),
    csi_pb2.CreateVolumeRequest(name="weird name/with slash", volume_capabilities=[mount_cap()],
                                parameters={"agent": "a"}),  # no project given, name unusable
    csi_pb2.CreateVolumeRequest(name="pvc-1", volume_capabilities=[mount_cap()],
                                parameters={"agent": "operator"}),   # a name the core refuses
])
def test_create_rejects_bad_input(shared_driver, request_):
    driver = shared_driver
    assert code_of(lambda: driver.controller.CreateVolume(request_)) == INVALID
    assert_nothing_mounted(driver)


def test_delete_validates_and_never_deletes_silently(make_driver):
    driver = make_driver()
    assert code_of(lambda: driver.controller.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id="../x"))) == INVALID
    # Retained and foreign ids: success without touching any store.
    driver.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="alpha~retain~00ff"))
    driver.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="csi-static-handle"))
    assert_nothing_mounted(driver)


def test_validate_rejects_missing_capabilities_before_mounting(make_driver):
    driver = make_driver()
    request = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id="alpha~retain~00ff", volume_context={"project": "alpha", "agent": "bot"})
    assert code_of(lambda: driver.controller.ValidateVolumeCapabilities(request)) == INVALID
    assert_nothing_mounted(driver)
    assert not (driver.state_dir / "controller-namespace").exists()  # no mount was even tried


def test_busy_volume_is_aborted_and_failed_mount_leaves_nothing(make_driver, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    driver = make_driver(lighthouse_cmd=gated_failing_cli(gate))
    request = publish_request(driver, secrets={"redisPassword": "hunter2"})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(lambda: driver.node.NodePublishVolume(request, timeout=30))
            eventually((gate / "vol1.started").exists)  # vol1 is held inside its mount
            assert code_of(lambda: driver.node.NodePublishVolume(request)) == grpc.StatusCode.ABORTED
            other = publish_request(driver, volume_id="vol2",
                                    target_path=str(driver.kubelet / "pods" / "p2" / "mount"))
            second = pool.submit(lambda: driver.node.NodePublishVolume(other, timeout=30))
            eventually((gate / "vol2.started").exists)  # vol2 is not blocked by vol1
        finally:
            (gate / "open").touch()
        with pytest.raises(grpc.RpcError) as info:
            first.result()
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "mount failed" in info.value.details()
        with pytest.raises(grpc.RpcError) as other_info:  # vol2 ran too, and failed
            second.result()
        assert other_info.value.code() == grpc.StatusCode.INTERNAL
    assert_nothing_mounted(driver)
    log = driver.log_text()
    assert "hunter2" not in log and "hunter2" not in info.value.details()
    assert "***stripped***" in log
