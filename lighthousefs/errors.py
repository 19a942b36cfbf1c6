"""Domain errors. Storage and projection code raise these; only fs/boundary.py turns them into errno.

Each error carries the errno it maps to, so the FUSE boundary needs no table.
"""
import errno


class LighthouseError(Exception):
    """An expected failure: it becomes an errno at the FUSE boundary."""

    errno = errno.EIO

    def __init__(self, message: str = "", *, errno_: int | None = None):
        super().__init__(message)
        if errno_ is not None:
            self.errno = errno_


def _kind(name: str, code: int) -> type[LighthouseError]:
    return type(name, (LighthouseError,), {"errno": code, "__doc__": f"Maps to {errno.errorcode[code]}."})


NotFound = _kind("NotFound", errno.ENOENT)
Exists = _kind("Exists", errno.EEXIST)
NotEmpty = _kind("NotEmpty", errno.ENOTEMPTY)
IsADirectory = _kind("IsADirectory", errno.EISDIR)
NotADirectory = _kind("NotADirectory", errno.ENOTDIR)
InvalidArgument = _kind("InvalidArgument", errno.EINVAL)
NameTooLong = _kind("NameTooLong", errno.ENAMETOOLONG)
ReadOnly = _kind("ReadOnly", errno.EROFS)
PermissionDenied = _kind("PermissionDenied", errno.EACCES)
NotPermitted = _kind("NotPermitted", errno.EPERM)
FileTooLarge = _kind("FileTooLarge", errno.EFBIG)
NoAttribute = _kind("NoAttribute", errno.ENODATA)
CrossDevice = _kind("CrossDevice", errno.EXDEV)


class StoreUnavailable(LighthouseError):
    """The store cannot be reached or answered with an error: EIO, quickly."""

    errno = errno.EIO


class _ChunkError(LighthouseError):
    """A file's chunks the store could not give as they were stored: EIO, and an answer
    of a healthy store (not a StoreUnavailable), so the breaker never counts it."""

    errno = errno.EIO
    problem = ""   # what went wrong, after the chunks' names ({where}: the store)

    def __init__(self, digests: list[bytes], where: str):
        self.digests = list(dict.fromkeys(digests))
        self.where = where
        names = ", ".join(d.hex() for d in self.digests)
        super().__init__(f"chunk{'s' if len(self.digests) > 1 else ''} {names} {self.problem.format(where=where)}")


class ChunkMissing(_ChunkError):
    """The store answered, but without a chunk the namespace names: the file's name
    exists and its content is gone. Data corruption, answered EIO (never ENOENT: the
    file is there)."""

    problem = "missing from {where}: the file's content is lost"


class ChunkCorrupt(_ChunkError):
    """The store answered with bytes that do not match the chunk's hash (a damaged
    disk, a hand-edited store); the bytes are never served nor cached."""

    problem = "from {where} did not match the hash that names it: the content is damaged"


class StoreFull(LighthouseError):
    """The store's disk is full: ENOSPC. The caller's condition, like a full local
    disk, not a store outage: it never opens the circuit breaker."""

    errno = errno.ENOSPC


class StoreDataLost(StoreUnavailable):
    """The store lost data this daemon had seen (e.g. Redis restarted empty).

    Permanent: the daemon stops changing anything rather than mix old and new state.
    """


class StoreOpenError(Exception):
    """The store cannot be opened at mount time (corrupt, locked, wrong URL), or the
    mount cannot be made (mount point, FUSE device, metrics address): no mount. The
    message is the one line the user sees."""
