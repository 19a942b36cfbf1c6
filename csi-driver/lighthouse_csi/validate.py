"""Checks of everything a CO sends: ids, names, paths, capabilities.

Each check raises InvalidArgument with a message that says what is wrong, and
returns the normalised value, so callers never act on unchecked input.
"""

import os
import re

from lighthouse_csi import csi_pb2
from lighthouse_csi.errors import InvalidArgument

# Volume ids become directory names under the state dir: no '/', no '..'.
_VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")   # fullmatch: `$` passes "x\n"
# Project and agent names: one path component of the lighthouse tree.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")   # fullmatch, as _VOLUME_ID

AccessMode = csi_pb2.VolumeCapability.AccessMode
READ_ONLY_MODES = {AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY}
# A lighthouse namespace is shared state: every mode, multi-writer included, is
# served (the event log orders concurrent writes; last close wins).
SUPPORTED_MODES = set(AccessMode.Mode.values()) - {AccessMode.UNKNOWN}
FS_TYPES = {"", "fuse.lighthouse", "lighthousefs"}


def volume_id(value: str) -> str:
    if not value:
        raise InvalidArgument("volume_id is required")
    if ".." in value or "/" in value or not _VOLUME_ID.fullmatch(value):
        raise InvalidArgument(
            f"volume_id {value!r} is not valid: 1-128 of [A-Za-z0-9._~-], no '/' or '..'")
    return value


def is_name(value: str) -> bool:
    return bool(_NAME.fullmatch(value)) and ".." not in value


def name(kind: str, value: str) -> str:
    """A project or agent name: one safe path component."""
    if not value:
        raise InvalidArgument(f"{kind} is required")
    if not is_name(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not valid: 1-128 of [A-Za-z0-9._-], no '..'")
    return value


def subpath(value: str) -> str:
    """A relative path inside a project; '' means the project itself."""
    value = value.strip("/") if value else ""
    if not value:
        return ""
    parts = value.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise InvalidArgument(f"subpath {value!r} is not valid: no empty, '.' or '..' parts")
    return "/".join(parts)


def agent(value: str) -> str:
    """An agent id, by the core's rule (lighthousefs.domain.rules.AGENT_NAME): caught
    here so a bad one is InvalidArgument, not a failed mount."""
    name("agent", value)
    if len(value) > 64 or value in ("shared", "operator"):
        raise InvalidArgument(f"agent {value!r} is not valid: at most 64 characters, not 'shared' or 'operator'")
    return value


def boolean(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0", ""):
        return False
    raise InvalidArgument(f"{key} must be true or false, not {value!r}")


def target_path(value: str, allowed_root: str) -> str:
    """An absolute path under allowed_root, also after resolving symlinks of
    its parent (the target itself may not exist yet: the CO may leave its
    creation to us)."""
    if not value:
        raise InvalidArgument("target_path is required")
    if not os.path.isabs(value) or "\0" in value:
        raise InvalidArgument(f"target_path {value!r} must be an absolute path")
    norm = os.path.normpath(value)
    if norm != value.rstrip("/") or "/../" in value + "/":
        raise InvalidArgument(f"target_path {value!r} must be normalised (no '..', '//', '.')")
    root = os.path.realpath(allowed_root)
    resolved = os.path.join(os.path.realpath(os.path.dirname(norm)), os.path.basename(norm))
    for path in (norm, resolved):
        if os.path.commonpath([path, root]) != root or path == root:
            raise InvalidArgument(f"target_path {value!r} is outside the allowed root {allowed_root}")
    return norm


def capability(cap) -> bool:
    """Check one VolumeCapability; return True when it asks for read-only."""
    if cap.WhichOneof("access_type") == "block":
        raise InvalidArgument("block access is not supported: lighthousefs is a filesystem")
    if cap.WhichOneof("access_type") != "mount":
        raise InvalidArgument("volume_capability needs access_type mount")
    if cap.mount.fs_type not in FS_TYPES:
        raise InvalidArgument(f"fs_type {cap.mount.fs_type!r} is not supported")
    if cap.access_mode.mode not in SUPPORTED_MODES:
        raise InvalidArgument(f"access mode {cap.access_mode.mode} is not supported")
    return cap.access_mode.mode in READ_ONLY_MODES


def capabilities(caps) -> None:
    if not caps:
        raise InvalidArgument("volume_capabilities are required")
    for cap in caps:
        capability(cap)
