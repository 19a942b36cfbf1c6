"""One mount's lifetime: open the store, load the projection, mount, serve, unmount.

Everything runs in one trio nursery: the FUSE loop, the group committer, the follower
of other producers' events, the kernel invalidator and the signal handler. When the
FUSE loop ends (unmounted from outside, or SIGINT/SIGTERM), the rest is cancelled and
a snapshot is stored so the next start replays little.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import stat
import subprocess
from typing import Callable

import pyfuse3
import trio

from . import content, errors, events
from .breaker import Breaker
from .control import Control
from .events import Draft
from .fs import LighthouseOperations
from .journal import Journal
from .metrics import Metrics
from .policy import Policy, check_agent_name
from .store import open_store
from .tree import AGENTS_INO, MEMORIES_INO, PROJECTS_INO

log = logging.getLogger(__name__)

DEMO_FILES = {
    b"README.md": b"# demo\n\nA small project to try lighthousefs with: ls, cat, grep, echo >, tail -f ../../events\n",
    b"plan.md": b"1. read the memories\n2. update agents/<you>/status\n3. write results here\n",
}


@dataclasses.dataclass
class MountConfig:
    mountpoint: str
    store_url: str
    agent: str | None = None
    read_only: bool = False
    demo: bool = False
    metrics_address: str | None = None
    cache_mb: int = 64
    debug_fuse: bool = False


def mounted_at(mountpoint: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == mountpoint for line in mounts)


def recover_mountpoint(mountpoint: str) -> None:
    """Detach a mount left dead by a killed daemon; refuse one that is alive.

    statfs always reaches the daemon (stat may be answered from the kernel's cache even
    on a dead connection), so it tells a dead mount from a live one.
    """
    if mounted_at(mountpoint):
        try:
            os.statvfs(mountpoint)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
                raise errors.StoreOpenError(f"{mountpoint}: {exc.strerror}") from None
            log.warning("%s: a dead mount was left by a killed daemon; detaching it", mountpoint)
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)
        else:
            raise errors.StoreOpenError(f"{mountpoint} is already a mount point")
    if not os.path.isdir(mountpoint):
        raise errors.StoreOpenError(f"{mountpoint} is not a directory")


def notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


async def _bootstrap(journal: Journal, config: MountConfig) -> None:
    """An agent's own directories exist; --demo adds a project to an empty namespace."""
    tree = journal.tree
    if config.read_only:
        return
    if config.agent:
        for parent in (MEMORIES_INO, AGENTS_INO):
            name = config.agent.encode()
            if tree.find(parent, name) is None:
                await journal.submit([Draft(events.MKNOD, tree.path(parent, name),
                                            {"parent": parent, "name": name, "mode": stat.S_IFDIR | 0o755})])
    if config.demo and not tree.nodes[PROJECTS_INO].entries:
        [(event, _)] = await journal.submit([Draft(events.MKNOD, "projects/demo", {
            "parent": PROJECTS_INO, "name": b"demo", "mode": stat.S_IFDIR | 0o755})])
        project = events.ino_for_seq(event.seq)
        for name, data in DEMO_FILES.items():
            hashes, chunks = content.split(data)
            await journal.submit([Draft(events.MKNOD, f"projects/demo/{name.decode()}", {
                "parent": project, "name": name, "mode": stat.S_IFREG | 0o644,
                "size": len(data), "chunks": hashes})], chunks)


async def _wait_answering(mountpoint: str) -> None:
    """Ready means the kernel gets answers: stat a control file through the mount."""
    await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, ".lighthouse", "health"))


async def _watch_signals(cancel: Callable[[], None], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()   # from here SIGTERM unmounts instead of killing
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            cancel()
            return


def _settle_memory() -> None:
    """After loading the projection: give the garbage of the replay back to the OS, and
    move the (acyclic, long-lived) tree out of the garbage collector's sight, so a full
    collection does not walk 100k nodes in the middle of a FUSE request. (The collection
    ran before the load, while cheap: the load makes no cyclic garbage, and a collection
    now would walk every node, 0.3 s at a million files.)"""
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass   # not glibc: the memory is reused, just not returned


async def serve(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted or signalled. StoreOpenError: nothing was mounted."""
    if config.agent:
        try:
            check_agent_name(config.agent)
        except errors.LighthouseError as exc:
            raise errors.StoreOpenError(str(exc)) from None
    await trio.to_thread.run_sync(recover_mountpoint, config.mountpoint)   # statfs of a dead mount can block
    store = await trio.to_thread.run_sync(open_store, config.store_url)
    try:
        started = trio.current_time()
        gc.collect()   # the imports' cyclic garbage, while the heap is small
        gc.disable()   # until the tree is frozen: the first collection would walk every node
        try:
            try:
                tree = await trio.to_thread.run_sync(Journal.load_tree, store)
            except (errors.LighthouseError, ValueError) as exc:
                raise errors.StoreOpenError(f"{config.store_url}: cannot load the namespace: {exc}") from None
            _settle_memory()
        finally:
            gc.enable()
        log.info("namespace loaded in %.2f s: %d inodes at event %d, %d events replayed after the snapshot at %d",
                 trio.current_time() - started, len(tree.nodes), tree.applied_seq,
                 tree.applied_seq - tree.snapshot_seq, tree.snapshot_seq)
        metrics = Metrics()
        metrics.start_replayed.set(tree.applied_seq - tree.snapshot_seq)
        if config.metrics_address:
            metrics.serve(config.metrics_address)
        breaker = Breaker("store", failure_threshold=3, reset_timeout=2.0, call_timeout=10.0, max_threads=8)
        breaker.on_state_change(lambda old, new: metrics.breaker_changed("store", old, new))
        breaker.on_state_change(lambda old, new: log.warning("store circuit %s -> %s", old, new))
        metrics.breaker_changed("store", "closed", breaker.state)
        journal = Journal(store, tree, actor=config.agent or "operator", metrics=metrics, breaker=breaker)
        control = Control(config.mountpoint, config.store_url, config.agent, config.read_only)
        ops = LighthouseOperations(journal, Policy(tree, config.agent, config.read_only), control.render, metrics,
                                   cache_bytes=config.cache_mb << 20)
        control.ops = ops
        options = set(pyfuse3.default_options) | {"fsname=lighthouse", "subtype=lighthouse"}
        if config.read_only:
            options.add("ro")
        if os.geteuid() == 0:
            options.add("allow_other")
        if config.debug_fuse:
            options.add("debug")
        pyfuse3.init(ops, config.mountpoint, options)
        ops.kernel_attached = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run_committer)
                await nursery.start(ops.run_invalidator)

                async def fuse_loop():
                    await pyfuse3.main()
                    nursery.cancel_scope.cancel()   # unmounted: stop the rest

                # Before the mount answers anyone: a SIGTERM from then on unmounts cleanly.
                await nursery.start(_watch_signals, pyfuse3.terminate)
                nursery.start_soon(fuse_loop)
                await _bootstrap(journal, config)
                await nursery.start(journal.follow)
                await nursery.start(journal.run_housekeeping)
                await _wait_answering(config.mountpoint)
                log.info("mounted %s at %s (store %s, agent %s)", "read-only" if config.read_only else "read-write",
                         config.mountpoint, config.store_url, config.agent or "operator")
                on_ready()
                notify_systemd("READY=1")
                # What this start replayed, snapshotted in the background, so the next
                # start need not replay it again.
                nursery.start_soon(journal.maybe_snapshot)
        finally:
            notify_systemd("STOPPING=1")
            pyfuse3.close(unmount=True)
            with trio.CancelScope(shield=True):
                await journal.snapshot()
    finally:
        store.close()
