"""The kernel's mount table, as this process's mount namespace sees it.

Read from /proc/self/mountinfo rather than by stat(): a stat of a FUSE mount whose
daemon died fails with ENOTCONN, and one of a hung daemon blocks. The kernel writes a
space, tab, newline and backslash in a path as an octal escape (\\040, \\011, \\012,
\\134); `unescape` undoes that, so a path read here equals the path given to mount.

The one reader for the daemon, the tests and the benchmarks (tests/harness imports it
from here). A leaf: it imports nothing of lighthousefs.
"""
from __future__ import annotations

import dataclasses
import re

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class MountEntry:
    point: str    # the mount point, unescaped
    fstype: str   # e.g. "fuse.lighthouse", "tmpfs"
    source: str   # e.g. "lighthouse", a device, "tmpfs"
    options: frozenset = frozenset()   # the mount's and the superblock's, as /proc/mounts joins them


def unescape(field: str) -> str:
    """A path as mountinfo writes it, back as the path itself."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read(path: str | None = None) -> list[MountEntry]:
    """Every mount, in the order they were made (a later mount on a path hides an
    earlier one). A name that is not UTF-8 comes back with surrogates, as os.fsdecode
    gives it."""
    entries = []
    with open(path or MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            # "<id> <parent> <dev> <root> <point> <options> [optional...] - <type> <source> <super options>"
            left, _, right = line.partition(" - ")
            fields, (fstype, source, super_options) = left.split(), (right.split() + ["", "", ""])[:3]
            options = frozenset(fields[5].split(",")) | frozenset(filter(None, super_options.split(",")))
            entries.append(MountEntry(unescape(fields[4]), fstype, unescape(source), options))
    return entries


def mount_type(point: str) -> str | None:
    """The type of what is mounted at `point` (the topmost mount there), or None."""
    found = None
    for entry in read():
        if entry.point == point:
            found = entry.fstype
    return found


def mounts_under(root: str) -> list[MountEntry]:
    """Mounts at or below root (root itself included; "/a/b" is not below "/a/bc"),
    in mount order."""
    root = root.rstrip("/") or "/"
    prefix = root if root == "/" else root + "/"
    return [e for e in read() if e.point == root or e.point.startswith(prefix)]
