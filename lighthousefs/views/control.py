"""The files of .lighthouse/: stats, health and version, rendered when opened, and
ControlView, which shows them as a View (base.py)."""
from __future__ import annotations

import json
import os
import stat
import time
from typing import Callable

from .. import errors
from .._version import __version__
from ..domain.layout import ROOT_INO
from ..store.url import redacted
from .base import Listing, View

CONTROL_INO = 7
CONTROL_FILES = {b"stats": 8, b"health": 9, b"version": 10}
CONTROL_INOS = {ino: name for name, ino in CONTROL_FILES.items()}


class Control:
    def __init__(self, mountpoint: str, store_url: str, agent: str | None, read_only: bool):
        self.mountpoint = mountpoint
        self.store_url = redacted(store_url)   # every agent reads this: never the password
        self.agent = agent
        self.read_only = read_only
        self.started = time.time()
        self.monitor = None   # the health.Monitor, set once created
        # What stats and health show of the mount, set once its Operations exist (attach).
        self.tree = None
        self.metrics = None
        self._open_files: Callable[[], int] = lambda: 0
        self._kernel_inodes: Callable[[], int] = lambda: 0

    def attach(self, tree, metrics, open_files: Callable[[], int], kernel_inodes: Callable[[], int]) -> None:
        """`open_files()`: files open on the mount; `kernel_inodes()`: inodes the kernel holds."""
        self.tree, self.metrics = tree, metrics
        self._open_files, self._kernel_inodes = open_files, kernel_inodes

    def render(self, name: bytes) -> bytes:
        return getattr(self, "_" + name.decode())()

    def _health(self) -> bytes:
        tree = self.tree
        health = self.monitor.report().as_dict()   # the same report as /readyz
        state = {
            "status": health.pop("status"),
            "reason": health.pop("reason"),
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "store": self.store_url,
            "agent": self.agent,
            "read_only": self.read_only,
            "applied_seq": tree.applied_seq,
            "uptime_s": round(time.time() - self.started, 3),
            **health,
        }
        return json.dumps(state, indent=2).encode() + b"\n"

    def _version(self) -> bytes:
        return f"lighthousefs {__version__}\n".encode()

    def _stats(self) -> bytes:
        """The Prometheus metrics in their text format, after a few gauges of the tree."""
        lines = [
            f"# lighthousefs {__version__} pid {os.getpid()}",
            f"lighthousefs_tree_inodes {len(self.tree.nodes)}",
            f"lighthousefs_fs_open_files {self._open_files()}",
            f"lighthousefs_fs_kernel_inodes {self._kernel_inodes()}",
        ]
        return ("\n".join(lines) + "\n").encode() + self.metrics.render()


class BytesHandle:
    """A read-only file whose whole content was fixed at open (control files)."""

    __slots__ = ("data",)
    keep_cache = False

    def __init__(self, data: bytes):
        self.data = data

    async def read(self, off: int, size: int) -> bytes:
        return self.data[off:off + size]


class ControlView(View):
    """.lighthouse/ and its files. `render(name)`: a file's content (Control.render);
    `attrs`: fs/attrs.py (virtual_attr)."""

    door = b".lighthouse"
    door_ino = CONTROL_INO
    fixed_inos = (CONTROL_INO, *CONTROL_INOS)

    def __init__(self, render: Callable[[bytes], bytes], attrs):
        self.render = render
        self._virtual_attr = attrs.virtual_attr

    def is_door(self, parent: int) -> bool:
        return parent == ROOT_INO

    def refuse_change(self):
        raise errors.NotPermitted(".lighthouse is part of the layout: the control files cannot be changed")

    async def lookup(self, parent: int, name: bytes):
        if parent == ROOT_INO:
            return await self.getattr(CONTROL_INO)
        if parent != CONTROL_INO:
            raise errors.NotADirectory(f".lighthouse/{CONTROL_INOS[parent].decode()} is a file")
        if name not in CONTROL_FILES:
            raise errors.NotFound(f".lighthouse/{name!r}")
        return await self.getattr(CONTROL_FILES[name])

    async def getattr(self, ino: int):
        if ino == CONTROL_INO:
            return self._virtual_attr(CONTROL_INO, stat.S_IFDIR | 0o555)
        return self._virtual_attr(ino, stat.S_IFREG | 0o444, len(self.render(CONTROL_INOS[ino])), volatile=True)

    async def open(self, ino: int, writing: bool) -> BytesHandle:
        if writing:
            raise errors.PermissionDenied("the control files are read-only")
        if ino == CONTROL_INO:
            raise errors.IsADirectory(".lighthouse is a directory")
        return BytesHandle(self.render(CONTROL_INOS[ino]))

    async def opendir(self, ino: int) -> Listing:
        if ino != CONTROL_INO:
            return await super().opendir(ino)
        return Listing(self, CONTROL_FILES.items())
