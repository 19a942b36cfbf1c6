"""Per-operation latency: fixtures, the operations, and the timing loop.

Single operations are Python ``os.*`` calls timed one by one with perf_counter_ns after
a warm-up; whole commands (grep -r, git status) are subprocesses timed per run.
Fixtures are written under ``root`` and measured under ``read_root`` (see mounts.py).
"""

import gc
import os
import subprocess
import time

from .mounts import wait_for
from .stats import summarize

TREE_DIRS, PER_DIR = 20, 100  # the walk/grep tree: 2000 files of 4 KiB
BIG_DIR = 1000                # entries of the big directory
GIT_FILES = 1000              # files in the git project
NEEDLE = "lighthouse-needle"
DATA4K = b"".join(b"line %04d of a 4 KiB benchmark file, nothing to see here...\n" % i
                  for i in range(64))[:4096]
GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}

# name -> (kind, description); kind "op" is one os call sequence, "cmd" a whole command
OPS = {
    "stat_existing": ("op", "stat of an existing file"),
    "stat_missing": ("op", "stat of a missing name (ENOENT)"),
    "listdir_100": ("op", "list a directory of 100 entries"),
    "listdir_1000": ("op", "list a directory of 1000 entries"),
    "cat_4k": ("op", "open + read 4 KiB + close"),
    "create_4k": ("op", "create + write 4 KiB + close"),
    "append": ("op", "open O_APPEND + write 100 B + close"),
    "rename": ("op", "rename a file"),
    "unlink": ("op", "unlink a file"),
    "mkdir": ("op", "mkdir"),
    "rmdir": ("op", "rmdir"),
    "walk_stat_2000": ("cmd", "os.walk + stat of 2000 files"),
    "grep_r": ("cmd", "grep -r over the 2000 files (8 MiB)"),
    "git_status": ("cmd", "git status in a project of 1000 files"),
}
# operations an agent's shell does all the time: --check holds their p99 under 5 ms
COMMON = ("stat_existing", "stat_missing", "listdir_100", "cat_4k", "create_4k",
          "append", "rename", "unlink", "mkdir", "rmdir")


def write(path, data=DATA4K):
    with open(path, "wb") as f:
        f.write(data)


def make_fixtures(root, ops, consumable):
    """Write what ``ops`` need under root; unlink/rmdir get ``consumable`` victims."""
    tree = root / "tree"
    if ops & {"stat_existing", "stat_missing", "listdir_100", "cat_4k", "walk_stat_2000", "grep_r"}:
        for d in range(TREE_DIRS):
            (tree / f"d{d:02d}").mkdir(parents=True)
            for f in range(PER_DIR):
                data = DATA4K if f != 50 else DATA4K[:-40] + f"\n{NEEDLE} {d}\n".encode().rjust(40, b".")
                write(tree / f"d{d:02d}" / f"f{f:03d}", data)
    if "listdir_1000" in ops:
        (root / "big").mkdir()
        for f in range(BIG_DIR):
            write(root / "big" / f"f{f:04d}", b"")
    if "git_status" in ops:
        git = root / "git"
        for f in range(GIT_FILES):
            (git / f"src{f // 100}").mkdir(parents=True, exist_ok=True)
            write(git / f"src{f // 100}" / f"m{f:04d}.py", b"print(%d)\n" % f)
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
            subprocess.run(["git", "-C", str(git)] + args, env=GIT_ENV, check=True,
                           capture_output=True, timeout=300)
    for name in ("create_4k", "mkdir"):
        if name in ops:
            (root / name).mkdir()
    if "append" in ops:
        write(root / "log", b"")
    if "rename" in ops:
        (root / "ren").mkdir()
        write(root / "ren" / "a", b"x")
    if "unlink" in ops:
        (root / "unlink").mkdir()
        for i in range(consumable):
            write(root / "unlink" / f"u{i}", b"x")
    if "rmdir" in ops:
        (root / "rmdir").mkdir()
        for i in range(consumable):
            (root / "rmdir" / f"d{i}").mkdir()
    write(root / "fixtures-done", b"")  # last: a second node waits for it


def operation(name, root):
    """A callable(i) doing operation ``name`` once under root (i = iteration number)."""
    r = str(root)
    d00 = f"{r}/tree/d00"
    files = [f"{d00}/f{f:03d}" for f in range(PER_DIR)]
    if name == "stat_existing":
        return lambda i: os.stat(files[i % PER_DIR])
    if name == "stat_missing":
        missing = [f"{d00}/nothing{k}" for k in range(PER_DIR)]

        def stat_missing(i):
            try:
                os.stat(missing[i % PER_DIR])
            except FileNotFoundError:
                return
            raise AssertionError(f"{missing[i % PER_DIR]} exists")
        return stat_missing
    if name == "listdir_100":
        return lambda i: os.listdir(d00)
    if name == "listdir_1000":
        return lambda i: os.listdir(f"{r}/big")
    if name == "cat_4k":
        def cat(i):
            fd = os.open(files[i % PER_DIR], os.O_RDONLY)
            os.read(fd, 8192)
            os.close(fd)
        return cat
    if name == "create_4k":
        def create(i):
            fd = os.open(f"{r}/create_4k/c{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, DATA4K)
            os.close(fd)
        return create
    if name == "append":
        def append(i):
            fd = os.open(f"{r}/log", os.O_WRONLY | os.O_APPEND)
            os.write(fd, b"%-99d\n" % i)
            os.close(fd)
        return append
    if name == "rename":
        ab = (f"{r}/ren/a", f"{r}/ren/b")
        return lambda i: os.rename(ab[i % 2], ab[(i + 1) % 2])
    if name == "unlink":
        return lambda i: os.unlink(f"{r}/unlink/u{i}")
    if name == "mkdir":
        return lambda i: os.mkdir(f"{r}/mkdir/d{i}")
    if name == "rmdir":
        return lambda i: os.rmdir(f"{r}/rmdir/d{i}")
    if name == "walk_stat_2000":
        def walk(i):
            n = 0
            for top, _, names in os.walk(f"{r}/tree"):
                for f in names:
                    os.stat(f"{top}/{f}")
                    n += 1
            assert n == TREE_DIRS * PER_DIR, f"walk saw {n} files"
        return walk
    if name == "grep_r":
        cmd = ["grep", "-r", "-l", NEEDLE, f"{r}/tree"]

        def grep(i):
            hits = subprocess.run(cmd, capture_output=True, timeout=120, check=True).stdout.count(b"\n")
            assert hits == TREE_DIRS, f"grep found {hits} files, not {TREE_DIRS}"
        return grep
    if name == "git_status":
        cmd = ["git", "-C", f"{r}/git", "status", "--porcelain"]

        def git_status(i):
            out = subprocess.run(cmd, capture_output=True, timeout=120, check=True, env=GIT_ENV).stdout
            assert out == b"", f"git status not clean: {out[:200]!r}"
        return git_status
    raise ValueError(f"unknown operation {name}")


def measure(fn, n, warmup):
    """Run fn(0..warmup-1) untimed, then time fn(warmup..warmup+n-1) one by one."""
    clock = time.perf_counter_ns
    samples = [0] * n
    gc.collect()
    gc.disable()
    try:
        for i in range(warmup):
            fn(i)
        for k in range(n):
            t0 = clock()
            fn(warmup + k)
            samples[k] = clock() - t0
    finally:
        gc.enable()
    return summarize(samples)


def iterations(kind, quick, override=None):
    """(n, warmup) for an operation kind."""
    if override:
        return override, max(1, override // 10)
    if kind == "op":  # warm-up touches each of the 100 files stat and cat cycle over
        return (500, PER_DIR) if quick else (5000, 5 * PER_DIR)
    return (10, 2) if quick else (50, 5)


def run_ops(target, ops, quick, override=None):
    """Write fixtures and measure each of ``ops`` on a started target; name -> summary."""
    n_op, warm_op = iterations("op", quick, override)
    base = target.root / "ops"
    base.mkdir()
    make_fixtures(base, set(ops), n_op + warm_op)
    target.prepared()
    root = target.read_root / "ops"
    if not wait_for((root / "fixtures-done").exists, 30):  # a second node may lag
        raise RuntimeError(f"{root}: the fixtures did not show up within 30 s")
    results = {}
    for name in ops:
        n, warmup = iterations(OPS[name][0], quick, override)
        if not target.warm:
            n, warmup = n + warmup, 0
        try:
            results[name] = measure(operation(name, root), n, warmup)
        except Exception as e:  # noqa: BLE001 - one broken op must not hide the others
            results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return results
