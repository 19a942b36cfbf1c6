"""The driver against the real lighthousefs: CreateVolume makes a project,
NodePublishVolume mounts the agent's view at the target (a real FUSE mount
plus a bind mount), `cat` reads it, and unpublish, delete, a driver restart
and a killed daemon all leave the mounts correct. No stand-ins."""

import json
import os
import signal
import subprocess
import time

import grpc
import pytest

from csi_harness import code_of, mount_cap
from tests.harness.mounts import eventually, mounts_under
from lighthouse_csi import csi_pb2

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root"),
]
pytest.importorskip("lighthousefs.cli")

RO = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY


def create(driver, name="pvc-1", **params):
    params.setdefault("agent", "writer")
    response = driver.call(driver.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
        name=name, volume_capabilities=[mount_cap()], parameters=params))
    return response.volume


def publish(driver, volume_id, context, pod="p1", readonly=False, cap=None):
    target = driver.kubelet / "pods" / pod / "volumes" / "mount"
    target.parent.mkdir(parents=True, exist_ok=True)
    driver.call(driver.node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, target_path=str(target), volume_capability=cap or mount_cap(),
        readonly=readonly, volume_context=context))
    return target


def unpublish(driver, volume_id, target):
    driver.call(driver.node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id, target_path=str(target)))


def cat(path) -> str:
    result = subprocess.run(["cat", str(path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"cat {path}: {result.stderr}"
    return result.stdout


def write(path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def node_mounts(driver) -> list[str]:
    """Mounts made for pods: targets and staging (not the controller's own)."""
    return mounts_under(str(driver.kubelet)) + mounts_under(str(driver.state_dir / "staging"))


def node_state(driver) -> dict:
    return json.loads((driver.state_dir / "node-state.json").read_text())["volumes"]


def validate_volume(driver, volume):
    return driver.controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume.volume_id, volume_context=volume.volume_context,
        volume_capabilities=[mount_cap()]), timeout=60)


def test_create_publish_cat_unpublish_delete(make_driver):
    driver = make_driver()
    volume = create(driver, project="alpha", onDelete="delete")
    assert volume.volume_id.startswith("alpha~delete~")
    assert dict(volume.volume_context) == {"project": "alpha", "agent": "writer", "readOnly": "false"}
    assert create(driver, project="alpha", onDelete="delete").volume_id == volume.volume_id
    assert validate_volume(driver, volume).confirmed.volume_capabilities

    target = publish(driver, volume.volume_id, volume.volume_context)
    assert str(target) in mounts_under(str(driver.kubelet))
    write(target / "notes.md", "hello from a pod\n")
    assert cat(target / "notes.md") == "hello from a pod\n"
    assert sorted(os.listdir(target)) == ["notes.md"]
    publish(driver, volume.volume_id, volume.volume_context)  # idempotent
    assert mounts_under(str(target)) == [str(target)]

    # A second, read-only publish of the same volume shares the namespace mount.
    ro_target = publish(driver, volume.volume_id, volume.volume_context, pod="p2", readonly=True)
    assert cat(ro_target / "notes.md") == "hello from a pod\n"
    with pytest.raises(OSError):
        write(ro_target / "other.md", "no")
    assert len(mounts_under(str(driver.state_dir / "staging"))) == 1
    # Same target, other readonly flag: incompatible.
    assert code_of(lambda: driver.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_cap(),
        readonly=True, volume_context=volume.volume_context))) == grpc.StatusCode.ALREADY_EXISTS

    unpublish(driver, volume.volume_id, ro_target)
    assert cat(target / "notes.md")  # the other target is untouched
    unpublish(driver, volume.volume_id, target)
    unpublish(driver, volume.volume_id, target)  # idempotent
    assert node_mounts(driver) == []
    assert node_state(driver) == {}
    assert not target.exists()

    driver.call(driver.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert code_of(lambda: validate_volume(driver, volume)) == grpc.StatusCode.NOT_FOUND
    driver.call(driver.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))


def test_delete_keeps_the_project_unless_asked(make_driver):
    driver = make_driver()
    volume = create(driver, project="kept")
    assert volume.volume_id.startswith("kept~retain~")
    driver.call(driver.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert validate_volume(driver, volume).confirmed.volume_capabilities


def test_project_defaults_to_the_pvc_name_and_subpath_is_made(make_driver):
    driver = make_driver()
    volume = create(driver, name="pvc-9f", subpath="docs/notes",
                    **{"csi.storage.k8s.io/pvc/name": "team-notes",
                       "csi.storage.k8s.io/pvc/namespace": "default"})
    assert volume.volume_context["project"] == "team-notes"
    target = publish(driver, volume.volume_id, volume.volume_context)
    write(target / "a.md", "in a subpath\n")
    whole = create(driver, name="pvc-whole", project="team-notes")
    whole_target = publish(driver, whole.volume_id, whole.volume_context, pod="p2")
    assert cat(whole_target / "docs" / "notes" / "a.md") == "in a subpath\n"
    unpublish(driver, volume.volume_id, target)
    unpublish(driver, whole.volume_id, whole_target)
    assert node_mounts(driver) == []


def test_inline_ephemeral_volume_read_only(make_driver):
    driver = make_driver()
    volume = create(driver, project="shared-docs")
    writer = publish(driver, volume.volume_id, volume.volume_context)
    write(writer / "README.md", "# shared docs\n")
    context = {"project": "shared-docs", "agent": "reader", "readOnly": "true",
               "csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.name": "reader-pod",
               "csi.storage.k8s.io/serviceAccount.name": "default"}
    inline = publish(driver, "csi-0123abcd", context, pod="reader")
    assert cat(inline / "README.md") == "# shared docs\n"
    with pytest.raises(OSError):
        write(inline / "x", "no")
    unpublish(driver, "csi-0123abcd", inline)
    unpublish(driver, volume.volume_id, writer)
    assert node_mounts(driver) == []


def test_unknown_project_is_not_found_and_nothing_stays_mounted(make_driver):
    driver = make_driver()
    assert code_of(lambda: publish(driver, "csi-nope", {"project": "nope", "agent": "a"})) \
        == grpc.StatusCode.NOT_FOUND
    volume = create(driver, project="exists")
    context = dict(volume.volume_context, subpath="missing/dir")
    assert code_of(lambda: publish(driver, "csi-sub", context)) == grpc.StatusCode.NOT_FOUND
    assert node_mounts(driver) == []
    assert node_state(driver) == {}


def test_symlinked_subpath_cannot_bind_a_host_directory(make_driver):
    driver = make_driver()
    volume = create(driver, project="sly")
    target = publish(driver, volume.volume_id, volume.volume_context)
    os.symlink("/etc", target / "escape")
    context = dict(volume.volume_context, subpath="escape")
    assert code_of(lambda: publish(driver, "csi-escape", context, pod="p2")) \
        == grpc.StatusCode.INVALID_ARGUMENT
    # Nor can CreateVolume be led to make directories through it.
    assert code_of(lambda: create(driver, name="pvc-esc", project="sly", subpath="escape/made-by-csi")) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert not os.path.exists("/etc/made-by-csi")
    unpublish(driver, volume.volume_id, target)
    assert node_mounts(driver) == []


def test_unexpected_failure_is_internal_and_leaves_nothing_mounted(make_driver):
    driver = make_driver()
    volume = create(driver, project="alpha")
    target = driver.kubelet / "pods" / "p1" / "volumes" / "mount"
    target.parent.mkdir(parents=True)
    target.write_text("a file where the CO should have left a directory")
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_cap(),
            volume_context=volume.volume_context), timeout=60)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "Traceback" not in info.value.details()
    assert "Traceback" in driver.log_text()  # the detail goes to the log
    assert node_mounts(driver) == []
    assert node_state(driver) == {}


def test_sigterm_stops_serving_but_keeps_volumes_mounted(make_driver):
    driver = make_driver()
    volume = create(driver, project="steady")
    target = publish(driver, volume.volume_id, volume.volume_context)
    write(target / "f.txt", "still here\n")
    driver.stop(signal.SIGTERM)
    assert cat(target / "f.txt") == "still here\n"  # pods keep their volumes
    assert mounts_under(str(driver.state_dir / "controller-namespace")) == []  # private: gone
    driver.start()
    unpublish(driver, volume.volume_id, target)
    assert node_mounts(driver) == []


def test_driver_restart_keeps_publish_and_unpublish_correct(make_driver):
    driver = make_driver()
    volume = create(driver, project="durable")
    target = publish(driver, volume.volume_id, volume.volume_context)
    write(target / "f.txt", "before restart\n")
    driver.restart(signal.SIGKILL)  # no chance to clean up: the state file must carry it
    assert cat(target / "f.txt") == "before restart\n"  # the daemon outlives the driver
    publish(driver, volume.volume_id, volume.volume_context)  # idempotent after restart
    assert mounts_under(str(target)) == [str(target)]
    assert list(node_state(driver)) == [volume.volume_id]
    unpublish(driver, volume.volume_id, target)
    assert node_mounts(driver) == []  # staging known from the state file, unmounted too
    assert node_state(driver) == {}


def _daemon_pid(driver, volume_id) -> int:
    staging = node_state(driver)[volume_id]["staging"]
    with open(os.path.join(staging, ".lighthouse", "health")) as f:
        return json.load(f)["pid"]


def _kill(pid) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_killed_daemon_is_repaired_on_republish(make_driver):
    driver = make_driver()
    volume = create(driver, project="fragile")
    target = publish(driver, volume.volume_id, volume.volume_context)
    other = publish(driver, volume.volume_id, volume.volume_context, pod="p2")
    write(target / "f.txt", "survives\n")
    _kill(_daemon_pid(driver, volume.volume_id))
    with pytest.raises(OSError):
        os.listdir(target)  # ENOTCONN: the mount is dead
    publish(driver, volume.volume_id, volume.volume_context)
    assert cat(target / "f.txt") == "survives\n"
    assert cat(other / "f.txt") == "survives\n"  # every bind of the volume is remade
    assert len(mounts_under(str(driver.state_dir / "staging"))) == 1
    unpublish(driver, volume.volume_id, target)
    unpublish(driver, volume.volume_id, other)
    assert node_mounts(driver) == []


def test_killed_daemon_is_repaired_when_the_driver_starts(make_driver):
    driver = make_driver()
    volume = create(driver, project="phoenix")
    target = publish(driver, volume.volume_id, volume.volume_context)
    write(target / "f.txt", "back again\n")
    driver.stop(signal.SIGKILL)
    _kill(_daemon_pid(driver, volume.volume_id))
    driver.start()
    # Recovery runs in the background after the server starts.
    eventually(lambda: cat(target / "f.txt") == "back again\n", timeout=60, interval=0.2)
    unpublish(driver, volume.volume_id, target)
    assert node_mounts(driver) == []
