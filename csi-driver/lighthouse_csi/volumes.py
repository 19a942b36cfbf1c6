"""What a lighthouse volume is, and how its id is formed.

A volume is a lighthouse namespace seen by one agent: a project, optionally a
subpath inside it, mounted read-write or read-only. It arrives as the volume
context (inline ephemeral volumes: the pod's volumeAttributes; persistent
volumes: what CreateVolume returned from the StorageClass parameters).

A provisioned volume's id encodes its project and its delete policy,
`<project>~<retain|delete>~<hash of the CO's name>`, so DeleteVolume knows
what it may remove without any controller-side state: the controller runs as
a Deployment whose local disk does not survive rescheduling.
"""

import dataclasses
import hashlib

from lighthouse_csi import validate
from lighthouse_csi.errors import InvalidArgument

# Keys the CO or the provisioner add by themselves; not ours to judge.
_FOREIGN_PREFIXES = ("csi.storage.k8s.io/", "storage.kubernetes.io/")
CONTEXT_KEYS = {"project", "subpath", "agent", "readOnly"}
PARAMETER_KEYS = CONTEXT_KEYS | {"onDelete"}
POLICIES = ("retain", "delete")


@dataclasses.dataclass(frozen=True)
class Volume:
    project: str
    agent: str
    subpath: str = ""
    read_only: bool = False

    def context(self) -> dict[str, str]:
        ctx = {"project": self.project, "agent": self.agent,
               "readOnly": "true" if self.read_only else "false"}
        if self.subpath:
            ctx["subpath"] = self.subpath
        return ctx


def _own_keys(values, allowed: set[str], what: str) -> dict[str, str]:
    own = {k: v for k, v in values.items() if not k.startswith(_FOREIGN_PREFIXES)}
    unknown = sorted(set(own) - allowed)
    if unknown:
        # A typo ('readonly', 'Project') must not silently give a writable or
        # wrong volume.
        raise InvalidArgument(f"unknown {what} {unknown}; known: {sorted(allowed)}")
    return own


def from_context(values, volume_id: str = "") -> Volume:
    """Parse and check a volume context; the project may come from the id."""
    own = _own_keys(values, CONTEXT_KEYS, "volume context keys")
    project = own.get("project") or parse_id(volume_id)[0]
    return Volume(
        project=validate.name("project", project or ""),
        agent=validate.agent(own.get("agent", "")),
        subpath=validate.subpath(own.get("subpath", "")),
        read_only=validate.boolean("readOnly", own.get("readOnly", "false")),
    )


def from_parameters(values, default_project: str) -> tuple[Volume, str]:
    """Parse StorageClass parameters: the volume and its delete policy."""
    own = _own_keys(values, PARAMETER_KEYS, "parameters")
    policy = own.pop("onDelete", "retain")
    if policy not in POLICIES:
        raise InvalidArgument(f"onDelete must be one of {POLICIES}, not {policy!r}")
    own.setdefault("project", default_project)
    return from_context(own), policy


def make_id(project: str, policy: str, name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{project}~{policy}~{digest}"


def parse_id(volume_id: str) -> tuple[str, str]:
    """(project, policy) of a provisioned volume id; ('', '') for other ids
    (inline volumes and static PVs carry their project in the context)."""
    parts = volume_id.split("~")
    if len(parts) == 3 and parts[1] in POLICIES:
        return parts[0], parts[1]
    return "", ""
