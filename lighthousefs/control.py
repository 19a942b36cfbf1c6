"""The files of .lighthouse/: stats, health and version, rendered when opened."""
from __future__ import annotations

import json
import os
import time

import psutil

from . import __version__


class Control:
    def __init__(self, mountpoint: str, store_url: str, agent: str | None, read_only: bool):
        self.mountpoint = mountpoint
        self.store_url = store_url
        self.agent = agent
        self.read_only = read_only
        self.started = time.time()
        self.ops = None   # the LighthouseOperations, set once created

    def render(self, name: bytes) -> bytes:
        return getattr(self, "_" + name.decode())()

    def _health(self) -> bytes:
        tree = self.ops.tree
        state = {
            "status": "ok",
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "store": self.store_url,
            "agent": self.agent,
            "read_only": self.read_only,
            "applied_seq": tree.applied_seq,
            "uptime_s": round(time.time() - self.started, 3),
        }
        return json.dumps(state, indent=2).encode() + b"\n"

    def _version(self) -> bytes:
        return f"lighthousefs {__version__}\n".encode()

    def _stats(self) -> bytes:
        ops = self.ops
        process = psutil.Process()
        lines = [
            f"applied_seq {ops.tree.applied_seq}",
            f"inodes {len(ops.tree.nodes)}",
            f"open_files {len(ops._open_files)}",
            f"kernel_inodes {len(ops._lookups)}",
            f"chunk_cache_bytes {ops._chunks.currsize}",
            f"rss_bytes {process.memory_info().rss}",
            f"cpu_seconds {sum(process.cpu_times()[:2]):.3f}",
        ]
        lines += [f"op_{name} {count}" for name, count in sorted(ops.counters.items())]
        return ("\n".join(lines) + "\n").encode()
