"""Restart at scale: mount-to-ready time and RSS of a namespace of a million files.

The files are appended straight to the store in large batches (the fastest real path:
the same events a mount or the API would log, without a round trip per file), then
the target is mounted twice: the first start replays every event and stores a
snapshot in the background; the second start loads that snapshot.
"""

import stat
import time

from .extras import rss_bytes

PER_DIR = 1000


def populate(store_url, project_path, files, per_dir=PER_DIR):
    """Append `files` small files under `project_path`/big (created with its parents),
    `per_dir` per directory, one batch per directory. Returns seconds taken."""
    from lighthousefs import content, events
    from lighthousefs.api import Client
    from lighthousefs.events import Draft

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


def wait_for_snapshot(store_url, seq, timeout=300.0):
    """Seconds until the store holds a snapshot at `seq` or later (None: not within timeout)."""
    from lighthousefs.store import open_store
    t0 = time.perf_counter()
    store = open_store(store_url)
    try:
        while time.perf_counter() - t0 < timeout:
            if store.snapshot_seqs() and max(store.snapshot_seqs()) >= seq:
                return time.perf_counter() - t0
            time.sleep(0.2)
        return None
    finally:
        store.close()


def restart_at_scale(target, files):
    """Write `files` files straight to the store, then: the first mount's time to ready
    (it replays them all), the seconds until its background snapshot is stored, and
    the second mount's time to ready and RSS (it loads the snapshot)."""
    from lighthousefs.store import open_store
    project = str(target.root.relative_to(target.mnt))   # projects/bench
    create_s = populate(target.store, project, files)
    store = open_store(target.store)
    last = store.last_seq()
    store.close()
    replay_ready_s = target.restart()
    replay_rss = rss_bytes(target.daemon_pids())
    snapshot_s = wait_for_snapshot(target.store, last)
    ready_s = target.restart()
    target.pin()
    rss = rss_bytes(target.daemon_pids())
    t0 = time.perf_counter()
    (target.root / "big" / "d0000" / "f0").stat()
    first_stat_ms = (time.perf_counter() - t0) * 1000
    return {"files": files, "events": last, "create_s": round(create_s, 1),
            "replay_ready_ms": round(replay_ready_s * 1000, 1),
            "replay_rss_mib": round(replay_rss / 2**20, 1),
            "snapshot_stored_s": None if snapshot_s is None else round(snapshot_s, 1),
            "mount_ready_ms": round(ready_s * 1000, 1), "rss_ready_mib": round(rss / 2**20, 1),
            "first_stat_ms": round(first_stat_ms, 3)}
