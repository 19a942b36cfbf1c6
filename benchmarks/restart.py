"""Restart at scale: mount-to-ready time and RSS of a namespace of a million files.

The files are appended straight to the store in large batches (the fastest real path:
the same events a mount or the API would log, without a round trip per file), then
the target is mounted twice: the first start replays every event and stores a
snapshot in the background; the second start loads that snapshot.
"""

import stat
import time

import psutil

from .extras import rss_bytes

PER_DIR = 1000


def populate(store_url, project_path, files, per_dir=PER_DIR):
    """Append `files` small files under `project_path`/big (created with its parents),
    `per_dir` per directory, one batch per directory. Returns seconds taken."""
    from lighthousefs.api import Client
    from lighthousefs.domain import chunks as content
    from lighthousefs.domain import events
    from lighthousefs.domain.events import Draft

    t0 = time.perf_counter()
    with Client(store_url, actor="bench") as client:
        top = client.mkdirs(f"{project_path}/big")
        store = client.store
        for d in range(-(-files // per_dir)):
            dpath = f"{project_path}/big/d{d:04d}"
            [made] = store.append([Draft(events.MKNOD, dpath, {
                "parent": top.ino, "name": b"d%04d" % d, "mode": stat.S_IFDIR | 0o755}, "bench")], {}, False)
            parent = events.ino_for_seq(made.seq)
            drafts, chunks = [], {}
            for i in range(d * per_dir, min(files, (d + 1) * per_dir)):
                data = b"%d\n" % i
                hashes, new = content.split(data)
                chunks.update(new)
                drafts.append(Draft(events.MKNOD, f"{dpath}/f{i}", {
                    "parent": parent, "name": b"f%d" % i, "mode": stat.S_IFREG | 0o644,
                    "size": len(data), "chunks": hashes}, "bench"))
            store.append(drafts, chunks, False)
        store.sync()
    return time.perf_counter() - t0


def _stat(mnt, name):
    for line in (mnt / ".lighthouse" / "stats").read_text().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _start(target, mount=None):
    """Restart the target (or call `mount`): (seconds to ready, CPU seconds the daemon
    used to get there, RSS)."""
    if mount is None:
        seconds = target.restart()
    else:
        t0 = time.perf_counter()
        mount()
        seconds = time.perf_counter() - t0
    pids = target.daemon_pids()
    cpu = sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)
    return seconds, cpu, rss_bytes(pids)


def restart_at_scale(target, files):
    """Mount-to-ready of `files` files: a start that replays every event, and one that
    loads the snapshot the first stored in the background. Each with the daemon's CPU
    seconds to ready (steadier than wall time on a shared machine) and its RSS; and
    first, an empty namespace's start, for what the interpreter costs."""
    from lighthousefs.store import open_store
    base_s, base_cpu, base_rss = _start(target)
    project = str(target.root.relative_to(target.mnt))   # projects/bench
    target.umount(target.mnt)   # else the daemon follows the appends and snapshots as they come
    create_s = populate(target.store, project, files)
    store = open_store(target.store)
    last = store.last_seq()
    store.close()
    replay_s, replay_cpu, replay_rss = _start(target, lambda: target.mount_again())
    t0 = time.perf_counter()
    while (_stat(target.mnt, "lighthousefs_journal_snapshot_seq") or 0) < last:
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("no snapshot stored within 600 s of the start")
        time.sleep(0.2)
    snapshot_s = time.perf_counter() - t0
    ready_s, ready_cpu, rss = _start(target)
    replayed = _stat(target.mnt, "lighthousefs_journal_start_replayed_events")
    t0 = time.perf_counter()
    (target.root / "big" / "d0000" / "f0").stat()
    first_stat_ms = (time.perf_counter() - t0) * 1000
    mib = 2 ** 20
    return {"files": files, "events": last, "create_s": round(create_s, 1),
            "empty_ready_ms": round(base_s * 1000, 1), "empty_cpu_s": round(base_cpu, 2),
            "empty_rss_mib": round(base_rss / mib, 1),
            "replay_ready_ms": round(replay_s * 1000, 1), "replay_cpu_s": round(replay_cpu, 2),
            "replay_rss_mib": round(replay_rss / mib, 1), "snapshot_stored_s": round(snapshot_s, 1),
            "mount_ready_ms": round(ready_s * 1000, 1), "cpu_s": round(ready_cpu, 2),
            "rss_ready_mib": round(rss / mib, 1), "replayed_events": replayed,
            "first_stat_ms": round(first_stat_ms, 3)}
