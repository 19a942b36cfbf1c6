"""The error boundary: the one place where a FUSE handler's errors are translated.

pyfuse3 lets only FUSEError out of a request handler (anything else ends the mount).
Every handler is wrapped: a domain error (errors.py) becomes its errno, logged once
(at debug for the expected ENOENT, EEXIST, ENODATA and ESTALE; a refusal repeated to a
later call on the same handle is not logged again); anything unexpected is logged
with its traceback and answered with EIO. `forget` answers nothing (it may not even
raise FUSEError): an unexpected error there is logged with its traceback and dropped.
Every handler is timed here too.
"""
from __future__ import annotations

import errno
import functools
import inspect
import logging
import time

import pyfuse3

from .. import errors
from ..files.handles import Repeated

log = logging.getLogger(__name__)

EXPECTED_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENODATA, errno.ESTALE}   # (ESTALE: the kernel retries)


def guarded(fn):
    """The error boundary of one request handler, and its timing. The instance has
    `metrics` and `_op_timers` (name -> observe)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self, *args):
        started = time.perf_counter()
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError as exc:
            self.metrics.op_errors.labels(name, errno.errorcode.get(exc.errno, exc.errno)).inc()
            raise
        except errors.LighthouseError as exc:
            code = errno.errorcode.get(exc.errno, str(exc.errno))
            self.metrics.op_errors.labels(name, code).inc()
            if isinstance(exc, Repeated):
                pass   # logged once, when it was refused
            elif exc.errno in EXPECTED_ERRNOS:
                log.debug("%s: %s", name, exc)
            else:
                log.info("%s refused (%s): %s", name, code, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            self.metrics.op_errors.labels(name, "EIO").inc()
            log.exception("%s%r failed unexpectedly; answering EIO", name, args[:-1] if args else ())
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            self._op_timers[name](time.perf_counter() - started)

    return wrapper


def guarded_forget(fn):
    """forget's boundary: it has no reply, so nothing may leave it."""

    @functools.wraps(fn)
    async def wrapper(self, inode_list):
        try:
            await fn(self, inode_list)
        except Exception:
            self.metrics.op_errors.labels("forget", "unexpected").inc()
            log.exception("forget(%d inodes) failed unexpectedly; the kernel's references may leak",
                          len(inode_list))

    return wrapper


def handlers(cls) -> list[str]:
    """The request handlers `cls` defines (forget has its own boundary)."""
    return [name for name, member in vars(cls).items()
            if not name.startswith("_") and name != "forget"
            and inspect.iscoroutinefunction(member) and hasattr(pyfuse3.Operations, name)]


def guard(cls) -> list[str]:
    """Wrap every handler of `cls` in the boundary, forget included; the names of the
    request handlers (timed, and so given a timer each)."""
    names = handlers(cls)
    for name in names:
        setattr(cls, name, guarded(getattr(cls, name)))
    if "forget" in vars(cls):
        cls.forget = guarded_forget(cls.forget)
    return names
