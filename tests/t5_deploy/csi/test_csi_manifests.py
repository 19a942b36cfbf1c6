"""Every object in csi-driver/deploy/ is a valid Kubernetes object, checked
by kubernetes-validate against the API's JSON schemas shipped in the package
(strict: unknown fields are errors), and the objects agree with each other
and with the driver."""

import pytest

from tests.harness import CSI_DIR
from lighthouse_csi import DRIVER_NAME

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = CSI_DIR / "deploy"
K8S_VERSION = "1.30.0"  # the oldest minor we claim to support


def _documents():
    for path in sorted(DEPLOY.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                yield pytest.param(doc, id=f"{path.name}#{index}-{doc.get('kind')}")


PARAMS = list(_documents())
DOCS = [p.values[0] for p in PARAMS]


@pytest.mark.parametrize("doc", PARAMS)
@pytest.mark.parametrize("version", [K8S_VERSION, "latest"])
def test_manifest_is_a_valid_kubernetes_object(doc, version):
    version = kubernetes_validate.latest_version() if version == "latest" else version
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{doc['kind']} {doc['metadata'].get('name')}: {err.message} at {list(err.path)}")


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing required"])
def test_the_validator_is_not_vacuous(breakage):
    import copy
    ds = copy.deepcopy(next(d for d in DOCS if d["kind"] == "DaemonSet"))
    container = ds["spec"]["template"]["spec"]["containers"][0]
    if breakage == "unknown field":
        container["mountPropogation"] = "Bidirectional"
    elif breakage == "wrong type":
        container["ports"][0]["containerPort"] = "9808"
    else:
        del container["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def by_kind(kind):
    return [d for d in DOCS if d["kind"] == kind]


def test_the_required_objects_are_there():
    kinds = {d["kind"] for d in DOCS}
    assert {"CSIDriver", "DaemonSet", "Deployment", "StorageClass", "StatefulSet",
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Pod",
            "PersistentVolumeClaim"} <= kinds


def test_driver_name_is_consistent():
    assert by_kind("CSIDriver")[0]["metadata"]["name"] == DRIVER_NAME
    assert by_kind("StorageClass")[0]["provisioner"] == DRIVER_NAME
    inline = [v for p in by_kind("Pod") for v in p["spec"]["volumes"] if "csi" in v]
    assert inline and all(v["csi"]["driver"] == DRIVER_NAME for v in inline)
    assert set(by_kind("CSIDriver")[0]["spec"]["volumeLifecycleModes"]) == {"Persistent", "Ephemeral"}


def _containers(kind):
    return {c["name"]: c for c in by_kind(kind)[0]["spec"]["template"]["spec"]["containers"]}


def test_node_daemonset_has_sidecars_and_propagation():
    containers = _containers("DaemonSet")
    assert {"driver", "node-driver-registrar", "liveness-probe"} <= set(containers)
    mounts = {m["mountPath"]: m for m in containers["driver"]["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    assert "--mode=node" in containers["driver"]["args"]
    registrar = " ".join(containers["node-driver-registrar"]["args"])
    assert f"/var/lib/kubelet/plugins/{DRIVER_NAME}/csi.sock" in registrar


def test_controller_has_provisioner():
    containers = _containers("Deployment")
    assert {"driver", "csi-provisioner", "liveness-probe"} <= set(containers)
    assert "--mode=controller" in containers["driver"]["args"]


def test_service_accounts_exist_for_workloads():
    accounts = {d["metadata"]["name"] for d in by_kind("ServiceAccount")}
    for kind in ("DaemonSet", "Deployment"):
        assert by_kind(kind)[0]["spec"]["template"]["spec"]["serviceAccountName"] in accounts


def test_example_pods_ls_and_cat_their_volume():
    for pod in by_kind("Pod"):
        script = " ".join(pod["spec"]["containers"][0]["args"])
        assert "ls " in script and "cat " in script


def test_storageclass_parameters_are_known_to_the_driver():
    from lighthouse_csi import volumes
    params = by_kind("StorageClass")[0]["parameters"]
    volume, policy = volumes.from_parameters(params, "demo")
    assert policy == "retain" and volume.agent


def test_the_store_url_comes_from_a_secret_never_from_args():
    """The URL may hold a password: a Secret, by the environment, never in a
    container's args (every user of the node can read a process's argv)."""
    workloads = by_kind("DaemonSet") + by_kind("Deployment")
    for doc in workloads:
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert not any("store" in arg.lower() for arg in container.get("args", [])), container["name"]
            for env in container.get("env", []):
                if env["name"] == "LIGHTHOUSE_STORE":
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "lighthousefs-store"
    secrets = [d for d in by_kind("Secret") if d["metadata"]["name"] == "lighthousefs-store"]
    assert secrets and "store" in secrets[0]["stringData"]
    assert not by_kind("ConfigMap")
