"""Hypothesis drives the same random operations on a real mount and on a directory on
the local disk, and compares results and errno values step by step."""
from __future__ import annotations

import itertools
import os
import stat

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from tests.harness.mounts import lighthouse

pytestmark = pytest.mark.mount

# Names that are not UTF-8 are names like any other: "b\xff" and a directory "\xe9" (é in
# latin-1), as str with surrogateescape (os.fsdecode), which os.* turn back into bytes.
B = os.fsdecode(b"b\xff")
E = os.fsdecode(b"\xe9")
PATHS = ["a", B, "d", "d/a", f"d/{B}", "d/e", "d/e/a", E, f"{E}/a"]
paths = st.sampled_from(PATHS)
data = st.binary(max_size=300)
offsets = st.integers(0, 400)
MAX_FILE_SIZE = ((1 << 32) - 1) * 4096     # ext4's, and lighthousefs's
# Sparse sizes and offsets far past the end: holes of up to 16 TiB, and just past the largest file.
far = st.sampled_from([(1 << 30) + 5, 1 << 33, (1 << 40) - 2, MAX_FILE_SIZE - 1, MAX_FILE_SIZE + 1])
# Files larger than this are compared at these offsets (and their ends), not whole.
WHOLE_MAX = 8 << 20
PROBES = [0, (1 << 30) - 100, (1 << 33) - 100, (1 << 40) - 1000, MAX_FILE_SIZE - 1000]
# A large file: more than the 64 dirty chunks (content.SPILL_CHUNKS) an open file keeps.
LARGE = b"".join(i.to_bytes(4, "big") * 1024 for i in range(72 * 16))


def outcome(fn, *args):
    """The result of fn, or the errno it raised."""
    try:
        return ("ok", fn(*args))
    except OSError as exc:
        return ("errno", exc.errno)


def describe(path: str):
    """What can be compared between the two trees for one path."""
    try:
        st_ = os.lstat(path)
    except OSError as exc:
        return ("errno", exc.errno)
    kind = stat.S_IFMT(st_.st_mode)
    if stat.S_ISDIR(st_.st_mode):
        return ("dir", oct(st_.st_mode), st_.st_nlink, sorted(os.listdir(path)))
    if stat.S_ISLNK(st_.st_mode):
        return ("link", os.readlink(path))
    with open(path, "rb") as f:
        if st_.st_size <= WHOLE_MAX:
            content = f.read()
        else:   # a sparse file: where the rules write, and its end
            content = [os.pread(f.fileno(), 8192, offset) for offset in PROBES + [st_.st_size - 1000]]
    return (kind, oct(st_.st_mode), st_.st_nlink, st_.st_size, content)


class MountAgainstDisk(RuleBasedStateMachine):
    mount_root = None
    disk_root = None
    runs = itertools.count()

    # Files held open across steps: a new file stays unlogged until its close, while
    # the other rules rename, unlink, link and list around it (lighthousefs/newfiles.py).
    MAX_OPEN = 3

    @initialize(large=st.sampled_from([True, False, False, False]))
    def start(self, large):
        self.open_pairs: list[tuple[int, int]] = []
        self.large_left = large
        run = os.fsdecode(b"run%d\xff" % next(self.runs))   # a project name that is not UTF-8 either
        self.mine = os.path.join(self.mount_root, "projects", run)
        self.disk = os.path.join(self.disk_root, run)
        os.mkdir(self.mine)
        os.mkdir(self.disk)

    def both(self, fn, *paths_and_args, n_paths=1):
        paths_, args = paths_and_args[:n_paths], paths_and_args[n_paths:]
        ours = outcome(fn, *[os.path.join(self.mine, p) for p in paths_], *args)
        theirs = outcome(fn, *[os.path.join(self.disk, p) for p in paths_], *args)
        assert ours == theirs, f"{fn.__name__}{paths_ + args}: mount {ours} != disk {theirs}"

    @rule(path=paths, content=data)
    def write_file(self, path, content):
        def write(p, c):
            with open(p, "wb") as f:
                f.write(c)
        self.both(write, path, content)

    @rule(path=paths, content=data)
    def append(self, path, content):
        def append(p, c):
            with open(p, "ab") as f:
                f.write(c)
        self.both(append, path, content)

    @rule(path=paths, offset=offsets, content=data)
    def write_at(self, path, offset, content):
        def pwrite(p, o, c):
            fd = os.open(p, os.O_WRONLY)
            try:
                return os.pwrite(fd, c, o)
            finally:
                os.close(fd)
        self.both(pwrite, path, offset, content)

    @rule(path=paths, size=offsets)
    def truncate(self, path, size):
        self.both(os.truncate, path, size)

    @rule(path=paths, size=far)
    def truncate_sparse(self, path, size):
        self.both(os.truncate, path, size)

    @rule(path=paths, offset=far, content=data)
    def write_far(self, path, offset, content):
        self.write_at(path, offset, content)

    # A large file in about one run of four, once: 4.5 MiB each time would slow the test down.
    @precondition(lambda self: self.large_left)
    @rule(path=paths, offset=st.sampled_from([0, 1000, (1 << 33) - 1000]))
    def write_large(self, path, offset):
        self.large_left = False

        def pwrite(p, o):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                return os.pwrite(fd, LARGE, o)
            finally:
                os.close(fd)
        self.both(pwrite, path, offset)

    @rule(path=paths)
    def mkdir(self, path):
        self.both(os.mkdir, path)

    @rule(path=paths)
    def rmdir(self, path):
        self.both(os.rmdir, path)

    @rule(path=paths)
    def unlink(self, path):
        self.both(os.unlink, path)

    @rule(src=paths, dst=paths)
    def rename(self, src, dst):
        self.both(os.rename, src, dst, n_paths=2)

    @rule(src=paths, dst=paths)
    def link(self, src, dst):
        self.both(os.link, src, dst, n_paths=2)

    @rule(path=paths, link_to=st.sampled_from(["a", "d", "d/e/a", os.fsdecode(b"missing\xfe")]))
    def symlink(self, path, link_to):
        self.both(lambda p, t: os.symlink(t, p), path, link_to)

    @rule(path=paths, mode=st.sampled_from([0o600, 0o644, 0o755, 0o700]))
    def chmod(self, path, mode):
        self.both(lambda p, m: os.chmod(p, m, follow_symlinks=False) if not os.path.islink(p) else None,
                  path, mode)

    @rule(path=paths)
    def read(self, path):
        self.both(lambda p: open(p, "rb").read(1 << 20), path)   # not all of a sparse TiB (describe reads the rest)

    @precondition(lambda self: len(self.open_pairs) < self.MAX_OPEN)
    @rule(path=paths, exclusive=st.booleans())
    def open_and_keep(self, path, exclusive):
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        ours = outcome(os.open, os.path.join(self.mine, path), flags, 0o644)
        theirs = outcome(os.open, os.path.join(self.disk, path), flags, 0o644)
        for result in (ours, theirs):
            if result[0] == "ok" and (ours[0], theirs[0]) != ("ok", "ok"):
                os.close(result[1])
        assert ours[0] == theirs[0] and (ours[0] == "ok" or ours == theirs), f"open {path}: {ours} != {theirs}"
        if ours[0] == "ok":
            self.open_pairs.append((ours[1], theirs[1]))

    @precondition(lambda self: self.open_pairs)
    @rule(which=st.integers(0, MAX_OPEN - 1), offset=offsets, content=data)
    def write_kept(self, which, offset, content):
        ours, theirs = self.open_pairs[which % len(self.open_pairs)]
        assert outcome(os.pwrite, ours, content, offset) == outcome(os.pwrite, theirs, content, offset)

    @precondition(lambda self: self.open_pairs)
    @rule(which=st.integers(0, MAX_OPEN - 1))
    def close_kept(self, which):
        ours, theirs = self.open_pairs.pop(which % len(self.open_pairs))
        assert outcome(os.close, ours) == outcome(os.close, theirs)

    def teardown(self):
        for ours, theirs in getattr(self, "open_pairs", []):
            for fd in (ours, theirs):
                try:
                    os.close(fd)
                except OSError:
                    pass

    @invariant()
    def same_tree(self):
        if not hasattr(self, "mine"):
            return
        for path in PATHS:
            ours = describe(os.path.join(self.mine, path))
            theirs = describe(os.path.join(self.disk, path))
            assert ours == theirs, f"{path}: mount {ours} != disk {theirs}"


def test_mount_behaves_like_a_local_disk(mounter, tmp_path):
    mnt = mounter("mnt")
    disk = tmp_path / "disk"
    disk.mkdir()
    MountAgainstDisk.mount_root = str(mnt.path)
    MountAgainstDisk.disk_root = str(disk)
    run_state_machine_as_test(MountAgainstDisk, settings=settings(
        max_examples=int(os.environ.get("LIGHTHOUSE_STATEFUL_EXAMPLES", "100")), stateful_step_count=40,
        deadline=None, database=None, suppress_health_check=list(HealthCheck)))
    # What the log holds is what was seen: a fresh daemon replays the same trees.
    lighthouse("umount", str(mnt.path))
    again = mounter("mnt")
    for dirpath, dirnames, filenames in os.walk(disk):
        for name in dirnames + filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), disk)
            path = os.path.join(again.path, "projects", relative)
            assert describe(path) == describe(os.path.join(disk, relative)), relative
    ours = sorted(os.path.relpath(os.path.join(d, n), again / "projects")
                  for d, dirs, files in os.walk(again / "projects") for n in dirs + files)
    theirs = sorted(os.path.relpath(os.path.join(d, n), disk) for d, dirs, files in os.walk(disk)
                    for n in dirs + files)
    assert ours == theirs
