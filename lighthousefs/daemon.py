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
import time
from typing import Callable

import pyfuse3
import trio

from . import errors, mounttable
from .domain import chunks, events
from .domain.events import Draft
from .domain.layout import AGENTS_INO, MEMORIES_INO, PROJECTS_INO
from .domain.rules import Policy, check_agent_name
from .engine import continuity
from .engine.health import Monitor, http_routes
from .engine.journal import Journal
from .engine.observers import Observers
from .engine.projection import load_tree
from .fs.operations import LighthouseOperations
from .metrics import Metrics
from .store import open_store
from .store.breaker import Breaker
from .views.control import Control

log = logging.getLogger(__name__)

# How often what this host remembers of the store (continuity.py) is brought up to date.
REMEMBER_EVERY_S = 5.0

DEMO_FILES = {
    b"README.md": b"# demo\n\nA small project to try lighthousefs with: ls, cat, grep, echo >, tail -f ../../events\n",
    b"plan.md": b"1. read the memories\n2. update agents/<you>/status\n3. write results here\n",
}

CALL_TIMEOUT_S = 10.0


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


LIGHTHOUSE_FSTYPE = "fuse.lighthouse"
FUSE_DEVICE = "/dev/fuse"


def recover_mountpoint(mountpoint: str) -> None:
    """Detach a lighthousefs mount left dead by a killed daemon; refuse a live mount, or
    a dead one of another file system (its owner may want it; we say how to detach it).

    statfs always reaches the daemon (stat may be answered from the kernel's cache even
    on a dead connection), so it tells a dead mount from a live one.
    """
    fstype = mounttable.mount_type(mountpoint)
    if fstype is not None:
        try:
            os.statvfs(mountpoint)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
                raise errors.StoreOpenError(f"{mountpoint}: {exc.strerror}") from None
            if fstype != LIGHTHOUSE_FSTYPE:
                raise errors.StoreOpenError(
                    f"{mountpoint} is a dead {fstype} mount (its daemon is gone): detach it with "
                    f"`fusermount3 -u -z {mountpoint}`, then mount again") from None
            log.warning("%s: a dead mount was left by a killed daemon; detaching it", mountpoint)
            detach = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
            if detach.returncode != 0:
                raise errors.StoreOpenError(
                    f"{mountpoint}: cannot detach the dead mount a killed daemon left "
                    f"({detach.stderr.strip()}): run `fusermount3 -u -z {mountpoint}` as its owner") from None
        else:
            raise errors.StoreOpenError(f"{mountpoint} is already a mount point")
    if not os.path.isdir(mountpoint):
        raise errors.StoreOpenError(f"{mountpoint} is not a directory")


def check_fuse_device() -> None:
    """libfuse cannot mount without opening the FUSE device (no fallback to fusermount3
    then); say so in one line instead of its RuntimeError."""
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as exc:
        raise errors.StoreOpenError(
            f"cannot open {FUSE_DEVICE}: {exc.strerror}: this user needs read and write access to it "
            "(in a container: pass the device, e.g. --device /dev/fuse; if it is missing: modprobe fuse)") from None


def notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


async def _bootstrap(journal: Journal, config: MountConfig) -> None:
    """An agent's own directories exist; --demo adds a project to an empty namespace.
    Checked like any change, for the mount's actor."""
    tree = journal.tree
    if config.read_only:
        return

    async def submit(draft: Draft, new_chunks: dict[bytes, bytes] | None = None):
        tree.check(draft)
        [(event, _)] = await journal.submit([draft], new_chunks)
        return event

    if config.agent:
        for parent in (MEMORIES_INO, AGENTS_INO):
            name = config.agent.encode()
            if tree.find(parent, name) is None:
                await submit(events.mknod(tree.path(parent, name), parent, name, stat.S_IFDIR | 0o755,
                                          actor=journal.actor))
    if config.demo and not tree.nodes[PROJECTS_INO].entries:
        event = await submit(events.mknod("projects/demo", PROJECTS_INO, b"demo", stat.S_IFDIR | 0o755,
                                          actor=journal.actor))
        project = events.ino_for_seq(event.seq)
        for name, data in DEMO_FILES.items():
            hashes, new_chunks = chunks.split(data)
            await submit(events.mknod(f"projects/demo/{name.decode()}", project, name, stat.S_IFREG | 0o644,
                                      size=len(data), chunks=hashes, actor=journal.actor), new_chunks)


async def _wait_answering(mountpoint: str) -> None:
    """Ready means the kernel gets answers: stat a control file through the mount.

    The thread is abandoned on cancel: a SIGTERM in the meantime stops the FUSE loop, and
    a stat it left unanswered returns only once the mount is gone, which the unmount after
    this nursery brings about (waiting for the thread here would wait for ever)."""
    await trio.to_thread.run_sync(os.stat, os.path.join(mountpoint, ".lighthouse", "health"),
                                  abandon_on_cancel=True)


async def _watch_signals(cancel: Callable[[], None], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()   # from here SIGTERM unmounts instead of killing
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            cancel()
            return


async def _remember_store(journal: Journal, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Keep this host's memory of the store (continuity.py) current: a store found
    behind it at the next mount lost data."""
    task_status.started()
    remembered = -1
    while True:
        if journal.tree.applied_seq != remembered:
            remembered = await _remember(journal)
        await trio.sleep(REMEMBER_EVERY_S)


async def _remember(journal: Journal) -> int:
    """Remember the applied seq once it is durable (a power loss may take what is not,
    which is no loss of data). Not once the store was found to have lost data: its new
    state must not become the one remembered. Returns the seq remembered, or -1."""
    seq = journal.tree.applied_seq
    try:
        await journal.sync()
    except errors.LighthouseError:
        return -1   # the store is failing: next time
    if journal.failsafe:
        return -1
    store = journal.store
    await trio.to_thread.run_sync(continuity.remember, store.url, store.store_id, seq)
    return seq


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


def _engine_observers(metrics: Metrics) -> Observers:
    """The engine's reports, into the metrics (the engine never sees the registry)."""
    applied_local = metrics.events_applied.labels("local").inc
    applied_remote = metrics.events_applied.labels("remote").inc

    def applied(event, local: bool) -> None:
        (applied_local if local else applied_remote)()
        metrics.applied_seq.set(event.seq)
        if not local:
            metrics.follower_lag_seconds.set(max(0.0, time.time() - event.time_ns / 1e9))

    def committed(seconds: float, count: int) -> None:
        metrics.commit_seconds.observe(seconds)
        metrics.commit_events.observe(count)
    return Observers(applied=applied, committed=committed, backlog=metrics.follower_lag_events.set,
                     snapshot_seq=metrics.snapshot_seq.set)


async def serve(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted or signalled. StoreOpenError: nothing was mounted."""
    if config.agent:
        try:
            check_agent_name(config.agent)
        except errors.LighthouseError as exc:
            raise errors.StoreOpenError(str(exc)) from None
    check_fuse_device()
    await trio.to_thread.run_sync(recover_mountpoint, config.mountpoint)   # statfs of a dead mount can block
    store = await trio.to_thread.run_sync(open_store, config.store_url)
    try:
        await trio.to_thread.run_sync(lambda: continuity.check(store.url, store.store_id, store.last_seq()))
        started = trio.current_time()
        gc.collect()   # the imports' cyclic garbage, while the heap is small
        gc.disable()   # until the tree is frozen: the first collection would walk every node
        try:
            try:
                tree = await trio.to_thread.run_sync(load_tree, store)
            except (errors.LighthouseError, ValueError) as exc:
                raise errors.StoreOpenError(f"{store.url}: cannot load the namespace: {exc}") from None
            _settle_memory()
        finally:
            gc.enable()
        log.info("namespace loaded in %.2f s: %d inodes at event %d, %d events replayed after the snapshot at %d",
                 trio.current_time() - started, len(tree.nodes), tree.applied_seq,
                 tree.applied_seq - tree.snapshot_seq, tree.snapshot_seq)
        metrics = Metrics()
        metrics.start_replayed.set(tree.applied_seq - tree.snapshot_seq)
        # call_timeout bounds reads and housekeeping; appends are waited for (journal.py).
        # The environment variable is for tests that need a slow call.
        call_timeout = float(os.environ.get("LIGHTHOUSE_STORE_CALL_TIMEOUT", CALL_TIMEOUT_S))
        breaker = Breaker("store", failure_threshold=3, reset_timeout=2.0, call_timeout=call_timeout, max_threads=8)
        breaker.on_state_change(lambda old, new: metrics.breaker_changed("store", old, new))
        breaker.on_state_change(lambda old, new: log.warning("store circuit %s -> %s", old, new))
        metrics.breaker_changed("store", "closed", breaker.state)
        journal = Journal(store, tree, actor=config.agent or "operator", observers=_engine_observers(metrics),
                          breaker=breaker)
        monitor = Monitor(journal)
        breaker.on_state_change(monitor.on_breaker_change)
        if config.metrics_address:
            try:
                metrics.serve(config.metrics_address, http_routes(monitor))
            except (OSError, ValueError) as exc:
                raise errors.StoreOpenError(f"--metrics {config.metrics_address}: cannot serve metrics there "
                                            f"({getattr(exc, 'strerror', None) or exc}): choose a free ADDR:PORT "
                                            "or leave --metrics out") from None
        control = Control(config.mountpoint, store.url, config.agent, config.read_only)
        control.monitor = monitor
        ops = LighthouseOperations(journal, Policy(tree, config.agent, config.read_only), control.render, metrics,
                                   cache_bytes=config.cache_mb << 20)
        control.attach(tree, metrics, open_files=lambda: len(ops.writer.open_files),
                       kernel_inodes=lambda: ops.kernel.inodes)
        # nodev: device nodes are stored (mknod), never opened as devices. (libfuse sets
        # it by default; said here so it stays whatever the defaults become.)
        options = set(pyfuse3.default_options) | {"fsname=lighthouse", "subtype=lighthouse", "nodev"}
        if config.read_only:
            options.add("ro")
        if os.geteuid() == 0:
            options.add("allow_other")
        if config.debug_fuse:
            options.add("debug")
        try:
            pyfuse3.init(ops, config.mountpoint, options)
        except RuntimeError as exc:   # libfuse printed its reason on stderr just before
            raise errors.StoreOpenError(f"the kernel refused the FUSE mount of {config.mountpoint} ({exc})") from None
        ops.kernel.attached = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run_committer)
                await nursery.start(ops.kernel.run_invalidator)

                async def fuse_loop():
                    await pyfuse3.main()
                    nursery.cancel_scope.cancel()   # unmounted: stop the rest

                # Before the mount answers anyone: a SIGTERM from then on unmounts cleanly.
                await nursery.start(_watch_signals, pyfuse3.terminate)
                nursery.start_soon(fuse_loop)
                await _bootstrap(journal, config)
                await nursery.start(journal.follow)
                await nursery.start(journal.run_heartbeat)
                await nursery.start(journal.run_housekeeping)
                await nursery.start(monitor.run)
                await nursery.start(_remember_store, journal)
                await _wait_answering(config.mountpoint)
                log.info("mounted %s at %s (store %s, agent %s)", "read-only" if config.read_only else "read-write",
                         config.mountpoint, store.url, config.agent or "operator")
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
                await _remember(journal)
    finally:
        store.close()
