"""The one wrapper every CSI RPC goes through.

It logs each request and response with secrets stripped (the frequent
identity calls at DEBUG, and their failure repeated unchanged at DEBUG after its
first WARNING), holds a per-volume lock (a second call for a busy volume gets
ABORTED, as the CSI spec asks, so the CO retries instead of racing), and turns
exceptions into gRPC status codes: CsiError subclasses into their own code,
anything else into INTERNAL with the traceback in the log (never in the status
message).
"""

import contextlib
import functools
import logging
import re
import threading

import grpc
from google.protobuf import text_format

from lighthouse_csi import csi_pb2
from lighthouse_csi.errors import Busy, CsiError

log = logging.getLogger(__name__)

STRIPPED = "***stripped***"
# Mount flags "MAY contain sensitive information" (CSI spec) but carry no
# csi_secret option, so they are named here.
_SENSITIVE_NAMES = {"mount_flags"}
# A URL in a text: its scheme, then everything to the next blank (a password may hold
# '/', ':' or '@': only the last '@' of the authority ends it).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(text: str) -> str:
    """Hide the password of any URL in text (redis://:pw@host -> redis://:***@host)."""
    return _URL.sub(lambda m: redacted(m.group(0)), text)


def redacted(url: str) -> str:
    """One URL with its password (or a user-info without one, which may be a token)
    replaced by ***. A copy of lighthousefs.store.url.redacted (this package does not
    import lighthousefs); a test checks that the two agree."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if rest.startswith("/"):          # sqlite:///path: no authority, an @ is the path's
        return url
    at = rest.split("?", 1)[0].rfind("@")
    if at < 0:
        return url
    user, colon, _ = rest[:at].partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}{rest[at:]}"


def _strip(msg) -> None:
    for field, value in msg.ListFields():
        secret = field.GetOptions().Extensions[csi_pb2.csi_secret]
        if secret or field.name in _SENSITIVE_NAMES:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key in list(value):
                    value[key] = STRIPPED
            elif field.is_repeated:
                del value[:]
                value.append(STRIPPED)
            else:
                setattr(msg, field.name, STRIPPED)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in (value if field.is_repeated else [value]):
                _strip(item)


def sanitize(msg) -> str:
    """One-line text of a protobuf message with every secret value replaced."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    _strip(copy)
    return redact_url(text_format.MessageToString(copy, as_one_line=True))


class VolumeLocks:
    """Non-blocking per-key locks: taken or refused at once, never waited for."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._busy: set[str] = set()

    @contextlib.contextmanager
    def hold(self, key: str):
        if not key:  # nothing to lock; the method rejects the empty id itself
            yield
            return
        with self._mutex:
            if key in self._busy:
                raise Busy(f"an operation on volume {key!r} is already in progress")
            self._busy.add(key)
        try:
            yield
        finally:
            with self._mutex:
                self._busy.discard(key)


# Called every few seconds by the kubelet's liveness probe and the sidecars: their
# requests are logged at DEBUG, or the log would be mostly these.
_FREQUENT = {"Probe", "GetPluginInfo", "GetPluginCapabilities", "NodeGetCapabilities"}


class _RepeatFilter:
    """The same failure of the same frequent RPC, again and again (a probe of a sick
    node), is logged at WARNING once, then at DEBUG until the RPC succeeds or fails
    otherwise. (Other RPCs log every failure: their requests are logged at INFO too.)"""

    def __init__(self):
        self._last: dict[str, tuple] = {}
        self._mutex = threading.Lock()

    def first(self, name, failure) -> bool:
        with self._mutex:
            first = self._last.get(name) != failure
            self._last[name] = failure
            return first

    def succeeded(self, name):
        with self._mutex:
            self._last.pop(name, None)


_repeats = _RepeatFilter()


def rpc(lock_key=None):
    """Decorate a servicer method `def M(self, request) -> response`.

    lock_key(request) names the volume to hold while the method runs. The
    servicer must have a `locks` attribute (a VolumeLocks shared by all
    services of the process, so the controller and node parts agree).
    """

    def decorate(method):
        name = method.__name__
        level = logging.DEBUG if name in _FREQUENT else logging.INFO

        @functools.wraps(method)
        def wrapper(self, request, context):
            log.log(level, "%s request: %s", name, sanitize(request))
            try:
                key = lock_key(request) if lock_key else ""
                with self.locks.hold(key):
                    response = method(self, request)
            except CsiError as err:
                code, detail = err.code, redact_url(str(err))
                repeated = name in _FREQUENT and not _repeats.first(name, (code, detail))
                log.log(logging.DEBUG if repeated else logging.WARNING, "%s failed%s: %s: %s", name,
                        " again" if repeated else "", code.name, detail)
            except Exception:  # noqa: BLE001 - the boundary: nothing else may escape
                _repeats.succeeded(name)   # "failed otherwise": the next repeat is news again
                log.exception("%s failed unexpectedly", name)
                code, detail = grpc.StatusCode.INTERNAL, f"{name}: internal error (see driver log)"
            else:
                _repeats.succeeded(name)
                log.log(level, "%s response: %s", name, sanitize(response))
                return response
            context.abort(code, detail)

        return wrapper

    return decorate
