"""The Operations driven in-process, without the kernel (s3ql's tier 3): a committer, the
daemon's Control and a real SQLite store, as daemon.py wires them, minus the mount."""
from __future__ import annotations

import os
from types import SimpleNamespace

import trio

from lighthousefs.domain.rules import Policy
from lighthousefs.engine.health import Monitor
from lighthousefs.engine.journal import Journal
from lighthousefs.engine.projection import load_tree
from lighthousefs.fs.operations import LighthouseOperations
from lighthousefs.metrics import Metrics
from lighthousefs.store.breaker import Breaker
from lighthousefs.store.sqlite import SQLiteStore
from lighthousefs.views.control import Control

# The request context pyfuse3 hands a handler: this process's.
CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)


def run_operations(tmp_path, body) -> None:
    """Run `await body(ops)` against a fresh store in `tmp_path`; the store is closed after."""
    store = SQLiteStore(str(tmp_path / "s.db"))

    async def main():
        journal = Journal(store, load_tree(store), actor="operator", breaker=Breaker("store", call_timeout=30.0))
        control = Control("/mnt", "sqlite:///s.db", None, False)
        control.monitor = Monitor(journal)
        metrics = Metrics()
        ops = LighthouseOperations(journal, Policy(journal.tree, None, False), control.render, metrics)
        control.attach(journal.tree, metrics, open_files=lambda: len(ops.writer.open_files),
                       kernel_inodes=lambda: ops.kernel.inodes)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run_committer)
            try:
                await body(ops)
            finally:
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()
