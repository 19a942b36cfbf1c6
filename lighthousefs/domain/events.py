"""Event types and their msgpack encoding. Pure data, no I/O.

An event is one change to the namespace. An event that creates a node usually does
not name an inode: the new node's inode is derived from the event's sequence number
(`ino_for_seq`), so inode numbers are unique across every producer and identical on
every replay without any allocation protocol. A producer that must hand out an inode
before its event is stored (a daemon answering create(2) before the file's first
close) first appends an INODES event, which reserves the range `inode_range(seq)` of
that event for it alone, and names inodes from that range in its MKNOD events.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
from typing import Any

import msgpack

# Inodes below this are fixed (root, top-level directories, control files).
INO_BASE = 1000
# Reserved ranges start here, far above every inode ino_for_seq gives (that would
# take 2**40 events), and end below 2**62, where the daemon numbers .history entries.
RESERVED_INO_BASE = 1 << 40
RESERVED_INO_END = 1 << 62
INO_RANGE = 1 << 16

# Types that change the tree. Any other type is an annotation (from `lighthouse emit`
# or the API): recorded and shown in `events`, ignored by the projection.
MKNOD = "mknod"          # parent, name, mode, uid, gid, rdev, target (symlinks), size+chunks, ino, mtime, ctime
LINK = "link"            # ino, parent, name
UNLINK = "unlink"        # parent, name (files, symlinks and empty directories)
RENAME = "rename"        # parent, name, new_parent, new_name, exchange
SETATTR = "setattr"      # ino and any of mode, uid, gid, atime, mtime
WRITE = "write"          # ino, size, chunks (hashes), mtime, ctime: one close() of a written file;
#                          base: an append, applied only onto the content with that digest
SETXATTR = "setxattr"    # ino, name, value
REMOVEXATTR = "removexattr"  # ino, name

# Not a tree change: reserves inode_range(seq) for the producer that appended it.
INODES = "inodes"        # count

# Names are bytes; paths are str with the bytes that are not UTF-8 as lone surrogates
# (Python's surrogateescape, as os.fsdecode does). The codec stores those bytes as they
# are (valid UTF-8 is stored as before, so old events read the same), and JSON lines show
# each as the escape \udc80..\udcff, which UTF-8 text never decodes to.
PATH_ERRORS = "surrogateescape"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

TREE_TYPES = frozenset({MKNOD, LINK, UNLINK, RENAME, SETATTR, WRITE, SETXATTR, REMOVEXATTR})

# The encoding version encode() writes. Events of RULES_VERSION and later were checked
# against the rights of their actor (domain/rules.py) when made, and every node checks
# them again when it applies them; older events apply exactly as they always did
# (docs/decisions.md), so a snapshot and a replay from the start agree.
VERSION = 2
RULES_VERSION = 2


def ino_for_seq(seq: int) -> int:
    return INO_BASE + seq


def inode_range(seq: int) -> range:
    """The inodes an INODES event with this seq reserves."""
    first = RESERVED_INO_BASE + seq * INO_RANGE
    return range(first, first + INO_RANGE)


def is_reserved_ino(ino: int) -> bool:
    """Could `ino` come from a reserved range? (Which producer holds it, the log says.)"""
    return RESERVED_INO_BASE <= ino < RESERVED_INO_END


@dataclasses.dataclass(frozen=True, slots=True)
class Draft:
    """An event before the store gave it a sequence number and a time."""

    type: str
    path: str
    payload: dict[str, Any]
    actor: str = ""


# ---- typed constructors: one place that knows each tree event's payload ---------------
# Optional fields are left out of the payload when they have their default, as the log
# always had them: the stored bytes of an event do not change with this code.

def mknod(path: str, parent: int, name: bytes, mode: int, *, uid: int | None = None, gid: int | None = None,
          target: bytes = b"", rdev: int = 0, ino: int | None = None, size: int | None = None,
          chunks: list[bytes] | None = None, times: dict[str, int] | None = None, actor: str = "") -> Draft:
    """A new name: a directory, a symlink (`target`), a device (`rdev`) or a file, which
    may come with its content (`size`, `chunks`), inode (`ino`, reserved) and times."""
    payload: dict[str, Any] = {"parent": parent, "name": name, "mode": mode}
    for key, value in (("uid", uid), ("gid", gid)):
        if value is not None:
            payload[key] = value
    payload.update(_present(target=target, rdev=rdev))
    for key, value in (("ino", ino), ("size", size), ("chunks", chunks)):
        if value is not None:
            payload[key] = value
    payload.update(times or {})
    return Draft(MKNOD, path, payload, actor)


def write(path: str, ino: int, size: int, chunks: list[bytes], *, times: dict[str, int] | None = None,
          base: bytes | None = None, actor: str = "") -> Draft:
    """One close() of a written file; with `base` an append, applied only onto the
    content with that digest."""
    payload: dict[str, Any] = {"ino": ino, "size": size, "chunks": chunks, **(times or {})}
    if base is not None:
        payload["base"] = base
    return Draft(WRITE, path, payload, actor)


def link(path: str, ino: int, parent: int, name: bytes, *, actor: str = "") -> Draft:
    return Draft(LINK, path, {"ino": ino, "parent": parent, "name": name}, actor)


def unlink(path: str, parent: int, name: bytes, *, actor: str = "") -> Draft:
    return Draft(UNLINK, path, {"parent": parent, "name": name}, actor)


def rename(path: str, parent: int, name: bytes, new_parent: int, new_name: bytes, *, to: str,
           exchange: bool = False, noreplace: bool = False, actor: str = "") -> Draft:
    """`to` is the destination's path, so a reader can scope the event without a tree."""
    payload = {"parent": parent, "name": name, "new_parent": new_parent, "new_name": new_name,
               **_present(exchange=exchange, noreplace=noreplace)}
    payload["to"] = to
    return Draft(RENAME, path, payload, actor)


def setattr(path: str, ino: int, changes: dict[str, int], *, actor: str = "") -> Draft:
    """`changes`: any of mode, uid, gid, atime, mtime."""
    return Draft(SETATTR, path, {**changes, "ino": ino}, actor)


def setxattr(path: str, ino: int, name: bytes, value: bytes, *, actor: str = "") -> Draft:
    return Draft(SETXATTR, path, {"ino": ino, "name": name, "value": value}, actor)


def removexattr(path: str, ino: int, name: bytes, *, actor: str = "") -> Draft:
    return Draft(REMOVEXATTR, path, {"ino": ino, "name": name}, actor)


def reserve_inodes(*, actor: str = "") -> Draft:
    return Draft(INODES, "", {"count": INO_RANGE}, actor)


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value}


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time_ns: int
    actor: str
    type: str
    path: str
    payload: dict[str, Any]
    version: int = VERSION   # of the encoding it was stored with (decode tells)

    def to_json_line(self) -> bytes:
        """The line shown in the `events` file: readable, without chunk hashes."""
        shown = {k: v for k, v in self.payload.items() if k not in ("chunks", "base")}
        for key, value in list(shown.items()):
            if isinstance(value, bytes):
                shown[key] = value.decode("utf-8", PATH_ERRORS)
        when = datetime.datetime.fromtimestamp(self.time_ns / 1e9, datetime.timezone.utc)
        record = {
            "seq": self.seq,
            "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "actor": self.actor,
            "type": self.type,
            "path": self.path,
        }
        if shown:
            record["data"] = shown
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        try:
            return line.encode() + b"\n"
        except UnicodeEncodeError:   # a name that is not UTF-8: escape those bytes, losslessly
            return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line).encode() + b"\n"


def encode(time_ns: int, draft: Draft) -> bytes:
    """The stored body of an event (the sequence number is the store's key)."""
    return msgpack.packb([VERSION, time_ns, draft.actor, draft.type, draft.path, draft.payload], use_bin_type=True,
                         unicode_errors=PATH_ERRORS)


def check_encodable(draft: Draft) -> None:
    """Raise what encode() would raise for this draft, cheaply: the chunk hashes (bytes
    that the content code makes, many for a large file) are left out of the trial."""
    payload = draft.payload
    if "chunks" in payload:
        payload = {k: v for k, v in payload.items() if k != "chunks"}
    encode(0, Draft(draft.type, draft.path, payload, draft.actor))


def decode(seq: int, body: bytes) -> Event:
    version, time_ns, actor, type_, path, payload = msgpack.unpackb(body, raw=False, unicode_errors=PATH_ERRORS)
    if version not in (1, 2):
        raise ValueError(f"event {seq}: unknown encoding version {version}")
    return Event(seq, time_ns, actor, type_, path, payload, version)
