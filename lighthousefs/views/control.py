"""The files of .lighthouse/: stats, health and version, rendered when opened."""
from __future__ import annotations

import json
import os
import time

from .._version import __version__
from ..store.url import redacted


class Control:
    def __init__(self, mountpoint: str, store_url: str, agent: str | None, read_only: bool):
        self.mountpoint = mountpoint
        self.store_url = redacted(store_url)   # every agent reads this: never the password
        self.agent = agent
        self.read_only = read_only
        self.started = time.time()
        self.ops = None   # the LighthouseOperations, set once created
        self.monitor = None   # the health.Monitor, set once created

    def render(self, name: bytes) -> bytes:
        return getattr(self, "_" + name.decode())()

    def _health(self) -> bytes:
        tree = self.ops.tree
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
        ops = self.ops
        lines = [
            f"# lighthousefs {__version__} pid {os.getpid()}",
            f"lighthousefs_tree_inodes {len(ops.tree.nodes)}",
            f"lighthousefs_fs_open_files {len(ops._open_files)}",
            f"lighthousefs_fs_kernel_inodes {ops.kernel_inodes}",
        ]
        return ("\n".join(lines) + "\n").encode() + ops.metrics.render()
