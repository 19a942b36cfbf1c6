"""The kernel side of publishing: which paths are mount points, bind mounts,
and unmounts that cannot hang.

Mount points are read from /proc/self/mountinfo rather than by stat(): a stat
of a FUSE mount whose daemon died fails with ENOTCONN, and one of a hung
daemon blocks.
"""

import logging
import os
import re
import subprocess

from lighthouse_csi.errors import MountFailed

log = logging.getLogger(__name__)

TIMEOUT = 30  # seconds for any mount or umount command
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> dict[str, str]:
    """{mount point: filesystem type} of the current mount namespace (the last
    mount on a path wins, as it is the one visible)."""
    points = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            points[_unescape(fields[4])] = right.split()[0]
    return points


def is_mount_point(path: str) -> bool:
    return os.path.normpath(path) in mount_points()


def _run(argv: list[str], pass_fds=()) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              pass_fds=pass_fds)
    except subprocess.TimeoutExpired as err:
        raise MountFailed(f"{argv[0]} timed out after {TIMEOUT}s") from err


def open_beneath(root: str, relative: str, create: bool = False) -> int:
    """An O_PATH descriptor of root/relative, walked one component at a time
    without following symlinks: NotADirectoryError (or ELOOP) when one is a
    symlink or a file, FileNotFoundError when one is missing (made instead,
    with create). The caller closes it."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in filter(None, relative.split("/")):
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def bind(source_fd: int, target: str, read_only: bool) -> None:
    """Bind-mount the directory open as source_fd onto target, read-only if asked.

    The source is passed as /proc/self/fd/N with --no-canonicalize, so the
    kernel binds exactly the directory that was checked: a symlink swapped in
    meanwhile cannot redirect it. A read-only bind needs a second remount (the
    kernel ignores ro on the first bind); if that fails the bind is undone,
    never left writable."""
    result = _run(["mount", "--bind", "--no-canonicalize", f"/proc/self/fd/{source_fd}", target],
                  pass_fds=(source_fd,))
    if result.returncode != 0:
        raise MountFailed(f"bind mount onto {target} failed: {result.stderr.strip()}")
    if read_only:
        result = _run(["mount", "-o", "remount,bind,ro", target])
        if result.returncode != 0:
            unmount(target)
            raise MountFailed(f"read-only remount of {target} failed: {result.stderr.strip()}")


def unmount(path: str) -> None:
    """Unmount every mount stacked on path; lazily when a plain umount fails
    (busy, or a dead FUSE daemon), so the call always makes progress."""
    for _ in range(8):  # bounded: a path rarely has more than one mount
        if not is_mount_point(path):
            return
        result = _run(["umount", path])
        if result.returncode != 0:
            log.warning("umount %s failed (%s); detaching lazily", path, result.stderr.strip())
            result = _run(["umount", "-l", path])
            if result.returncode != 0:
                raise MountFailed(f"unmount of {path} failed: {result.stderr.strip()}")
    if is_mount_point(path):
        raise MountFailed(f"{path} is still a mount point after repeated unmounts")


def detach_fuse(path: str) -> None:
    """Lazily detach a FUSE mount whose daemon is gone (fusermount3 -uz),
    falling back to umount -l."""
    if not is_mount_point(path):
        return
    if _run(["fusermount3", "-uz", path]).returncode != 0:
        _run(["umount", "-l", path])
    if is_mount_point(path):
        raise MountFailed(f"could not detach the dead mount at {path}")
