"""Targets to measure (tmpfs, bindfs, lighthousefs in one of its modes) and their cleanup.

A target owns a temp dir, its mounts, its daemons and a redis-server if it needs one.
Every resource is registered with ``cleanup`` the moment it exists, so an error, Ctrl-C
or SIGTERM still unmounts and kills everything (``run_cleanups`` also runs at exit).
"""

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

# The mount table, unmounting, Redis and running `lighthouse` are the tests' harness's.
from tests.harness import REPO  # noqa: F401 (re-exported)
from tests.harness.mounts import is_mounted, lighthouse_cmd, lighthouse_env, mounts_under, unmount_all
from tests.harness.redis_servers import RedisServer

MODES = ("sqlite", "redis-warm", "redis-cold", "redis-2node")

_cleanups = {}  # token -> (description, callable); run newest first
_next_token = 0


class Skip(Exception):
    """The target cannot run here; the message says why."""


def cleanup(description, fn, *args):
    """Register fn(*args) to run at cleanup; returns a token for ``done``."""
    global _next_token
    _next_token += 1
    _cleanups[_next_token] = (description, lambda: fn(*args))
    return _next_token


def done(token):
    """Run one registered cleanup now (once)."""
    entry = _cleanups.pop(token, None)
    if entry:
        entry[1]()


def checkpoint():
    """A mark for ``run_cleanups(after=...)``: cleanups registered later than now."""
    return _next_token


def run_cleanups(after=0):
    """Run pending cleanups registered after the mark, newest first; report failures
    but keep going."""
    for token in sorted((t for t in _cleanups if t > after), reverse=True):
        description, fn = _cleanups.pop(token)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            print(f"cleanup failed: {description}: {e}", file=sys.stderr)


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


def install_handlers():
    """Cleanups at exit; SIGTERM/SIGHUP unwind like Ctrl-C so finally blocks run.
    SIGINT too when started in the background (where the shell had it ignored)."""
    atexit.register(run_cleanups)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _sigterm)


def run(cmd, timeout=120, check=True, **kw):
    """subprocess.run with captured text output; raises with stderr on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return p


def attempt(cmd, timeout=30, **kw):
    """Run cmd for cleanup: True if it succeeded; a failure or a hang is not an error."""
    try:
        return run(cmd, check=False, timeout=timeout, **kw).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_for(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unmount(path, fuse=True):
    """Unmount path; lazy unmount if a normal one keeps failing (busy)."""
    path = str(path)
    if not is_mounted(path):
        return
    cmd, lazy = (["fusermount3", "-u", path], ["fusermount3", "-uz", path]) if fuse else (
        ["umount", path], ["umount", "-l", path])
    for _ in range(5):
        if attempt(cmd) or not is_mounted(path):
            return
        time.sleep(0.2)
    attempt(lazy)


def kill(pid, timeout=5):
    """SIGTERM, then SIGKILL after timeout; a missing process is fine."""
    try:
        p = psutil.Process(pid)
        p.terminate()
        p.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        p.kill()


def remove_tree(path):
    """rm -r a temp dir, but never through a mount that is still up."""
    path = os.path.realpath(path)
    if mounts_under(path):
        print(f"not removing {path}: still mounted", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def _roots(root):
    return {os.path.abspath(root), os.path.realpath(root)}


def _below(path, roots):
    return any(path == r or path.startswith(r + "/") for r in roots)


def processes_under(root):
    """Processes other than this one and its ancestors whose command line names a path
    at or below root, or whose working directory is there: the daemons, redis-servers
    and bindfs processes of a run whose temp dirs are under root."""
    roots = _roots(root)
    spared = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.info["pid"] in spared:
            continue
        args = p.info["cmdline"] or []
        if any(_below(a, roots) for a in args) or (p.info["cwd"] and _below(p.info["cwd"], roots)):
            found.append(p)
    return found


def sweep(root, timeout=10):
    """Leave nothing of a run under root, whatever state it stopped in: unmount every
    mount there (deepest first; their daemons then exit), stop the processes still
    there (SIGTERM, then SIGKILL after timeout), unmount what a killed daemon left, and
    remove root. Never raises; returns what it had to clean up (mounts and processes),
    empty when the run had cleaned up after itself."""
    found = []
    try:
        found += [f"mount {point}" for point in mounts_under(root)]
        unmount_all(root)   # whether or not their daemons still answer
        procs = processes_under(root)
        for p in procs:
            try:
                found.append(f"process {p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}")
                p.terminate()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        psutil.wait_procs(alive, timeout=timeout)
        unmount_all(root)   # what a daemon that had to be killed left
        remove_tree(root)
    except Exception as e:  # noqa: BLE001 - cleanup must go on
        print(f"sweep of {root} failed: {e}", file=sys.stderr)
    return found


def set_affinity(pid, cpus):
    """Pin every thread of pid to cpus (affinity is per thread on Linux)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, OSError):
            pass


def fuse_pids(mountpoint, name=None):
    """Pids of processes whose command line names mountpoint (the FUSE daemon)."""
    mp = str(mountpoint)
    pids = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if mp in cmd and p.info["pid"] != os.getpid() and (name is None or p.info["name"] == name):
            pids.append(p.info["pid"])
    return pids


def mount_tmpfs(path):
    path.mkdir(parents=True, exist_ok=True)
    cleanup(f"umount {path}", unmount, path, False)   # first: an interrupt leaves no mount
    run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", str(path)])


class Target:
    """A filesystem to measure: ``root`` is where fixtures are written, ``read_root``
    where operations are measured (the same dir unless the mode says otherwise)."""

    name = "?"
    warm = True  # False: measure without warm-up iterations (cold caches)

    def __init__(self, cpu=None):
        self.cpu = cpu  # pin daemons to this CPU, or None
        self.dir = Path(tempfile.mkdtemp(prefix=f"lhbench-{self.name}-"))
        cleanup(f"rm -r {self.dir}", remove_tree, self.dir)

    @property
    def prefix(self):
        return ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []

    def start(self):
        raise NotImplementedError

    def prepared(self):
        """Called after the fixtures are written, before measuring."""

    def daemon_pids(self):
        return []

    def restart(self):
        """Unmount and mount again on the same data; returns seconds to ready."""
        raise Skip("no daemon")

    def second_view(self):
        """Another mount of the same data (for propagation), or None."""
        return None

    def pin(self):
        if self.cpu is not None:
            for pid in self.daemon_pids():
                set_affinity(pid, {self.cpu})


class Tmpfs(Target):
    name = "tmpfs"

    def start(self):
        self.root = self.read_root = self.dir / "mnt"
        mount_tmpfs(self.root)


class Bindfs(Target):
    """bindfs (C, FUSE passthrough) over a tmpfs dir: the cost of FUSE itself."""

    name = "bindfs"

    def start(self):
        self.back = self.dir / "back"
        mount_tmpfs(self.back)
        self.root = self.read_root = self._mount(self.dir / "mnt")

    def _mount(self, mnt):
        mnt.mkdir(exist_ok=True)
        cleanup(f"fusermount3 -u {mnt}", unmount, mnt)   # first, as for lighthousefs
        run(self.prefix + ["bindfs", str(self.back), str(mnt)])
        return mnt

    def daemon_pids(self):
        return fuse_pids(self.root, "bindfs")

    def restart(self):
        unmount(self.root)
        t0 = time.perf_counter()
        self._mount(self.root)
        return time.perf_counter() - t0

    def second_view(self):
        return self._mount(self.dir / "mnt2")


def start_redis(dir, cpu=None):
    """A private redis-server (the harness's) on a free loopback port, data in dir, with
    Redis's default fsync policy; stopped at cleanup."""
    server = RedisServer(dir=str(dir), appendfsync="everysec", own_session=True,
                         argv_prefix=("taskset", "-c", str(cpu)) if cpu is not None else ())
    cleanup("stop redis-server", server.stop)
    try:
        return server.start()
    except RuntimeError as e:
        raise Skip(str(e)) from None


class Lighthouse(Target):
    """lighthousefs, started the way ``mode`` says:

    sqlite       embedded store, one mount (a second mount on the same file follows it)
    redis-warm   Redis store, one mount; fixtures and measurements through it
    redis-cold   Redis store; fixtures through one daemon, which is then unmounted, and
                 a fresh daemon is measured without warm-up (empty caches)
    redis-2node  Redis store, two daemons: A writes the fixtures, B is measured
    """

    def __init__(self, mode, cpu=None):
        self.mode = mode
        self.name = f"lighthousefs-{mode}"
        self.warm = mode != "redis-cold"
        super().__init__(cpu)
        self._mounts = {}  # mountpoint -> cleanup token
        self._pids = {}  # mountpoint -> daemon pid, read once at mount

    def start(self):
        if self.mode == "sqlite":
            self.store = f"sqlite:///{self.dir}/store.db"
        else:
            self.store = start_redis(self.dir, self.cpu).url
        self.mnt = self._mount(self.dir / "a", "bench-a")
        self.root = self.read_root = self.mnt / "projects" / "bench"
        self.root.mkdir(parents=True, exist_ok=True)
        if self.mode == "redis-2node":
            self.read_mnt = self._mount(self.dir / "b", "bench-b")
            self.read_root = self.read_mnt / "projects" / "bench"

    def _mount(self, mnt, agent):
        mnt.mkdir(exist_ok=True)
        cmd = self.prefix + lighthouse_cmd() + ["mount", str(mnt), "--store", self.store,
                                                  "--agent", agent, "--log", f"{mnt}.log"]
        # Registered first: an interrupt while the mount command runs leaves no mount behind.
        self._mounts[mnt] = cleanup(f"lighthouse umount {mnt}", self._umount, mnt)
        p = run(cmd, check=False, timeout=120, env=lighthouse_env(), cwd=self.dir)
        if p.returncode or not os.path.ismount(mnt):
            log = Path(f"{mnt}.log")
            why = log.read_text(errors="replace") if log.exists() else ""
            why = " | ".join((why or p.stderr or p.stdout).strip().splitlines()[-3:])
            raise Skip(f"mount failed (exit {p.returncode}): {why[-400:]}")
        self._pids[mnt] = pid = self._health_pid(mnt)
        if pid and self.cpu is not None:
            set_affinity(pid, {self.cpu})
        return mnt

    @staticmethod
    def _health_pid(mnt):
        try:
            return int(json.loads((mnt / ".lighthouse" / "health").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pids = fuse_pids(mnt)
            return pids[0] if pids else None

    def _umount(self, mnt):
        pid = self._pids.pop(mnt, None)
        attempt(lighthouse_cmd() + ["umount", str(mnt)], timeout=60, env=lighthouse_env())
        unmount(mnt)
        if pid:
            kill(pid)

    def umount(self, mnt):
        done(self._mounts.pop(mnt))

    def prepared(self):
        if self.mode == "redis-cold":
            self.restart()

    def daemon_pids(self):
        pid = self._pids.get(self.mnt)
        return [pid] if pid else []

    def restart(self):
        self.umount(self.mnt)
        t0 = time.perf_counter()
        self.mount_again()
        return time.perf_counter() - t0

    def mount_again(self):
        """Mount the main mountpoint again (after umount)."""
        self._mount(self.mnt, "bench-a")

    def second_view(self):
        if self.mode == "redis-2node":
            return self.read_mnt / "projects" / "bench"
        return self._mount(self.dir / "c", "bench-c") / "projects" / "bench"


def make_target(name, cpu=None):
    if name == "tmpfs":
        return Tmpfs(cpu)
    if name == "bindfs":
        return Bindfs(cpu)
    return Lighthouse(name.removeprefix("lighthousefs-"), cpu)


@contextlib.contextmanager
def mounted(name, cpu=None):
    """A started target (daemons pinned to cpu, if given), torn down on exit."""
    mark = checkpoint()
    try:
        target = make_target(name, cpu)
        target.start()
        target.pin()
        yield target
    finally:
        run_cleanups(after=mark)
