"""Pure parts of the driver: validation, volume ids, secret stripping, the
busy lock and the state file. No process, no mount."""

import json
import os
import threading

import pytest

from csi_harness import mount_cap
from lighthouse_csi import csi_pb2, validate, volumes
from lighthouse_csi.errors import Busy, InvalidArgument
from lighthouse_csi.mounts import _unescape
from lighthouse_csi.rpc import STRIPPED, VolumeLocks, redact_url, sanitize
from lighthouse_csi.state import State


@pytest.mark.parametrize("vid", ["vol1", "proj~retain~0123456789abcdef", "csi-6f0c9a", "a.b_c-d"])
def test_good_volume_ids(vid):
    assert validate.volume_id(vid) == vid


@pytest.mark.parametrize("vid", ["", "..", "a/b", "../x", "a..b", ".hidden", "x" * 129, "a b", "vol1\n"])
def test_bad_volume_ids(vid):
    with pytest.raises(InvalidArgument):
        validate.volume_id(vid)


def test_names_with_a_trailing_newline_are_refused():
    """`$` matches before a final newline: the driver's checks must end where the name does."""
    for check in (lambda v: validate.agent(v), lambda v: validate.name("project", v)):
        with pytest.raises(InvalidArgument):
            check("bob\n")


def test_target_path_inside_root(tmp_path):
    root = tmp_path / "kubelet"
    (root / "pods").mkdir(parents=True)
    assert validate.target_path(str(root / "pods" / "mnt"), str(root)) == str(root / "pods" / "mnt")


@pytest.mark.parametrize("bad", ["relative/path", "/etc/passwd", "{root}/../etc", "{root}",
                                 "{root}/pods/../../etc", "{root}/link/x", ""])
def test_target_path_outside_root(tmp_path, bad):
    root = tmp_path / "kubelet"
    root.mkdir()
    os.symlink("/etc", root / "link")  # a symlink must not lead out
    with pytest.raises(InvalidArgument):
        validate.target_path(bad.format(root=root), str(root))


@pytest.mark.parametrize("sub,expected", [("", ""), ("a", "a"), ("/a/b/", "a/b")])
def test_subpath_ok(sub, expected):
    assert validate.subpath(sub) == expected


@pytest.mark.parametrize("sub", ["..", "a/../b", "a//b", "./a"])
def test_subpath_bad(sub):
    with pytest.raises(InvalidArgument):
        validate.subpath(sub)


def test_context_parsing_ignores_co_keys_and_rejects_typos():
    ctx = {"project": "alpha", "agent": "bot", "readOnly": "true", "subpath": "docs",
           "csi.storage.k8s.io/ephemeral": "true",
           "storage.kubernetes.io/csiProvisionerIdentity": "x"}
    assert volumes.from_context(ctx) == volumes.Volume("alpha", "bot", "docs", True)
    with pytest.raises(InvalidArgument, match="readonly"):
        volumes.from_context({"project": "alpha", "agent": "bot", "readonly": "true"})
    with pytest.raises(InvalidArgument, match="agent is required"):
        volumes.from_context({"project": "alpha"})
    with pytest.raises(InvalidArgument):
        volumes.from_context({"project": "../etc", "agent": "bot"})
    for bad_agent in ("shared", "a" * 65, "-x", "a/b"):
        with pytest.raises(InvalidArgument):
            volumes.from_context({"project": "alpha", "agent": bad_agent})


def test_volume_id_carries_project_and_policy():
    vid = volumes.make_id("alpha", "delete", "pvc-123")
    assert validate.volume_id(vid) == vid
    assert volumes.parse_id(vid) == ("alpha", "delete")
    assert volumes.parse_id("csi-abcdef") == ("", "")
    # project from the id when the context lacks it (static PVs, retries)
    assert volumes.from_context({"agent": "a"}, vid).project == "alpha"


def test_parameters_default_project_and_policy():
    vol, policy = volumes.from_parameters({"agent": "a"}, "pvc-1")
    assert (vol.project, policy) == ("pvc-1", "retain")
    with pytest.raises(InvalidArgument):
        volumes.from_parameters({"agent": "a", "onDelete": "maybe"}, "p")


def test_capabilities():
    assert validate.capability(mount_cap()) is False
    ro = csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY
    assert validate.capability(mount_cap(ro)) is True
    block = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(),
                                     access_mode=mount_cap().access_mode)
    with pytest.raises(InvalidArgument, match="block"):
        validate.capability(block)
    with pytest.raises(InvalidArgument):
        validate.capabilities([])


def test_sanitize_strips_secrets_and_mount_flags():
    cap = mount_cap()
    cap.mount.mount_flags.append("password=hunter2")
    req = csi_pb2.NodePublishVolumeRequest(
        volume_id="v", target_path="/t", volume_capability=cap,
        secrets={"token": "hunter2"}, volume_context={"project": "p"})
    text = sanitize(req)
    assert "hunter2" not in text
    assert STRIPPED in text and "token" in text and 'value: "p"' in text
    assert req.secrets["token"] == "hunter2"  # the request itself is untouched


def test_redact_url():
    assert redact_url("redis://:s3cret@redis:6379/0 and redis://u:p@h/1") == \
        "redis://:***@redis:6379/0 and redis://u:***@h/1"
    assert redact_url("sqlite:///var/lib/x.db") == "sqlite:///var/lib/x.db"
    assert redact_url("redis://:p@ss@host") == "redis://:***@host"   # no part of the password shows
    assert redact_url("redis://tok@h") == "redis://***@h"             # a user-info alone may be a token


REDACTED = [   # the URLs of tests/t4_mount/test_secrets.py::test_redacted, and more
    "redis://:pw@host:6379/0", "redis://user:pw@host:6379/0", "rediss://u:p@ss:w/rd@host/0?ssl_ca_certs=/a/b",
    "redis+sentinel://:pw@h1:26379,h2:26379/mymaster", "redis://token@host", "redis://host:6379/0",
    "sqlite:///home/a@b/x.db", "redis://:p@ss@host", "redis://tok@h", "redis://:a/b@h/0", "redis://:@h",
    "redis+cluster://:pw@[::1]:7000/0", "redis://:pw@[::1/0", "redis://h/0?password=x@y",
]


@pytest.mark.parametrize("url", REDACTED)
def test_redact_url_agrees_with_the_core(url):
    """The driver's copy of the core's redaction gives what the core gives, for a URL
    alone and for one inside a logged message; and never shows the password."""
    from lighthousefs.store.url import redacted
    assert redact_url(url) == redacted(url)
    assert redact_url(f'secrets {{ value: "{url}" }} x') == f'secrets {{ value: "{redacted(url)}" }} x'


@pytest.mark.parametrize("agent", ["operator", "shared"])
def test_agent_names_the_core_refuses(agent):
    from lighthousefs.domain import rules
    with pytest.raises(InvalidArgument):
        validate.agent(agent)
    with pytest.raises(Exception):
        rules.check_agent_name(agent)


def test_volume_locks_refuse_a_busy_volume():
    locks = VolumeLocks()
    with locks.hold("v1"):
        with pytest.raises(Busy):
            with locks.hold("v1"):
                pass
        with locks.hold("v2"):  # other volumes are not blocked
            pass
    with locks.hold("v1"):  # released
        pass


def test_state_round_trip_and_atomic(tmp_path):
    state = State(str(tmp_path / "s" / "state.json"))
    assert state.read() == {"volumes": {}}
    with state.edit() as data:
        data["volumes"]["v"] = {"targets": {"/t": {"readonly": True}}}
    assert json.loads((tmp_path / "s" / "state.json").read_text())["volumes"]["v"]
    with pytest.raises(RuntimeError):
        with state.edit() as data:
            data["volumes"].clear()
            raise RuntimeError("crash mid-edit")
    assert "v" in state.read()["volumes"]  # an aborted edit is not saved
    assert not (tmp_path / "s" / "state.json.tmp").exists()


def test_state_edits_from_threads_do_not_lose_updates(tmp_path):
    state = State(str(tmp_path / "state.json"))

    def add(i):
        with state.edit() as data:
            data["volumes"][f"v{i}"] = {"targets": {}}

    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(state.read()["volumes"]) == 20


def test_mountinfo_unescape():
    assert _unescape("/a\\040b\\011c") == "/a b\tc"
