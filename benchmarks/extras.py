"""Throughput, cross-node propagation, memory (a large file written, start-up) of a started target."""

import contextlib
import os
import threading
import time

import psutil

from .mounts import Skip
from .stats import summarize


def closes_per_s(target, quick):
    """Files created, written (100 B) and closed per second through the mount."""
    n = 500 if quick else 5000
    d = target.root / "closes"
    d.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(f"{d}/c{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"%-99d\n" % i)
        os.close(fd)
    return {"n": n, "closes_per_s": round(n / (time.perf_counter() - t0), 1)}


def propagation(target, quick, timeout=5.0):
    """Delay from close() of a write on one mount to the new content read on another.

    The reader polls (open + read + close, then 100 µs sleep), so the delay includes
    up to one poll interval. Gives up after 3 timeouts.
    """
    other = target.second_view()
    if other is None:
        raise Skip("no second view of the same data")
    n = 20 if quick else 200
    src, dst = target.root / "prop", other / "prop"
    src.write_bytes(b"start")
    if not _wait_content(dst, b"start", 30):
        raise RuntimeError("the second mount never saw the file")
    samples, timeouts = [], 0
    for i in range(n):
        want = b"version %d" % i
        fd = os.open(src, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, want)
        os.close(fd)
        t0 = time.perf_counter_ns()
        if _wait_content(dst, want, timeout):
            samples.append(time.perf_counter_ns() - t0)
        else:
            timeouts += 1
            if timeouts == 3:  # it does not propagate: stop, do not wait n * timeout
                break
    result = summarize(samples) if samples else {"n": 0}
    result.pop("ops_per_s", None)
    result["timeouts"] = timeouts
    result["timeout_s"] = timeout
    return result


def _wait_content(path, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.read(fd, len(want) + 1) == want:
                    return True
            finally:
                os.close(fd)
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0001)


def rss_bytes(pids):
    """Resident memory of the daemons and their children."""
    total = 0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            total += sum(q.memory_info().rss for q in [p] + p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return total


def memory_startup(target, levels):
    """Per file count N (ascending): mount-to-ready time with N files, first stat after
    it, and the daemon's RSS after a walk that stats all N files. Files are added
    through lighthousefs's Python API when the target has one (faster than the mount),
    else through the mount; 1000 per directory."""
    base = target.root / "mem"
    base.mkdir()
    have, out = 0, []
    with _file_writer(target) as (write, how):
        for n in levels:
            t0 = time.perf_counter()
            for i in range(have, n):
                write(f"d{i // 1000:03d}", f"f{i % 1000:03d}", b"%d\n" % i)
            create_s, have = time.perf_counter() - t0, n
            ready_s = target.restart()
            target.pin()
            t0 = time.perf_counter()
            os.stat(base / "d000" / "f000")
            first_stat_ms = (time.perf_counter() - t0) * 1000
            rss_ready = rss_bytes(target.daemon_pids())
            t0 = time.perf_counter()
            seen = 0
            for top, _, names in os.walk(base):
                for f in names:
                    os.stat(f"{top}/{f}")
                seen += len(names)
            walk_s = time.perf_counter() - t0
            if seen != n:
                raise RuntimeError(f"walk saw {seen} of {n} files after restart")
            out.append({"files": n, "created_via": how, "create_s": round(create_s, 3),
                        "mount_ready_ms": round(ready_s * 1000, 1), "first_stat_ms": round(first_stat_ms, 3),
                        "walk_s": round(walk_s, 3), "rss_ready_mib": round(rss_ready / 2**20, 1),
                        "rss_after_walk_mib": round(rss_bytes(target.daemon_pids()) / 2**20, 1)})
    return out


@contextlib.contextmanager
def _file_writer(target):
    """(write(dir, name, data) under target.root/mem, "api" or "mount")."""
    try:
        from lighthousefs.api import Client
        store = target.store
    except (ImportError, AttributeError):
        made = set()

        def write(d, name, data):
            if d not in made:
                (target.root / "mem" / d).mkdir()
                made.add(d)
            (target.root / "mem" / d / name).write_bytes(data)
        yield write, "mount"
        return
    prefix = target.root.relative_to(target.mnt)  # projects/bench
    with Client(store, actor="bench") as client:
        yield (lambda d, name, data: client.write_file(f"{prefix}/mem/{d}/{name}", data)), "api"


def api_events(target, quick, batch=100):
    """Events appended per second through the Python API (lighthousefs.api.Client), on
    the target's store: one event per call (each durable on return), and ``batch``
    events per call (append_many)."""
    try:
        from lighthousefs.api import Client
    except ImportError as e:
        raise Skip(f"no Python API: {e}") from None
    n = 200 if quick else 2000
    calls = 10 * n // batch
    with Client(target.store, actor="bench") as client:
        t0 = time.perf_counter()
        for i in range(n):
            client.append("bench", "projects/bench/api", {"i": i})
        single = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for k in range(calls):
            client.append_many([("bench", "projects/bench/api", {"i": k * batch + j}) for j in range(batch)])
        batched = calls * batch / (time.perf_counter() - t0)
    return {"n_single": n, "single_per_s": round(single, 1),
            "batch": batch, "n_batched": calls * batch, "batched_per_s": round(batched, 1)}


def large_file_rss(target, quick, mib=256):
    """The daemon's RSS while one file of ``mib`` MiB (distinct chunks) is written through
    the mount: idle, the peak (sampled every 50 ms) and the growth, with the write time.
    An open file keeps only the chunks not yet stored, so the growth does not depend on
    the size."""
    pids = target.daemon_pids()
    if not pids:
        raise Skip("no daemon")
    block = os.urandom(1 << 20)
    idle = peak = rss_bytes(pids)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, rss_bytes(pids))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        with open(target.root / "large", "wb") as f:
            for i in range(mib):
                f.write(block[i:] + block[:i])
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - t0
    peak = max(peak, rss_bytes(pids))
    (target.root / "large").unlink()
    return {"mib": mib, "write_close_s": round(seconds, 2), "mib_per_s": round(mib / seconds, 1),
            "rss_idle_mib": round(idle / 2**20, 1), "rss_peak_mib": round(peak / 2**20, 1),
            "rss_growth_mib": round((peak - idle) / 2**20, 1)}
