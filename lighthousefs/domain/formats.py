"""The formats of the files an agent publishes: agents/<agent>/state.json (one JSON
object) and status (one line). Pure: checks of bytes and sizes; which node has a format
is the rules' to say (rules.format_of, from where it is in the tree)."""
from __future__ import annotations

from .. import errors
from .jsonprefix import JsonPrefix, check_document

STATE_FILE = b"state.json"
STATUS_FILE = b"status"
MAX_STATUS_BYTES = 4096
MAX_STATE_DEPTH = 64   # levels of objects and arrays in a state.json
# A state.json is read whole to be checked (at a write that is not an append, at close,
# at a rename onto it): bounded, so no agent can make the daemon read a terabyte hole.
MAX_STATE_BYTES = 1 << 20


def format_of_path(path: str) -> bytes | None:
    """The format of the file at a path (agents/<agent>/state.json or status), from the
    path alone: for a check before any directory on the way exists."""
    parts = [part for part in path.split("/") if part]
    if len(parts) == 3 and parts[0] == "agents" and parts[2].encode() in (STATE_FILE, STATUS_FILE):
        return parts[2].encode()
    return None


def check_format(kind: bytes | None, data: bytes, where: str) -> None:
    """`data` must be a whole valid file of `kind` (None: any content is)."""
    if kind is not None:
        try:
            check_format_size(kind, len(data))
            validate_format(kind, data)
        except (errors.InvalidArgument, errors.FileTooLarge) as exc:
            raise type(exc)(f"format: {where}: {exc}") from None


def check_format_size(kind: bytes | None, size: int) -> None:
    """Refuse a state.json (EFBIG) or status (EINVAL) larger than its kind allows, before
    any of it is read."""
    if kind == STATE_FILE and size > MAX_STATE_BYTES:
        raise errors.FileTooLarge(f"state.json is at most {MAX_STATE_BYTES} bytes, not {size}")
    if kind == STATUS_FILE and size > MAX_STATUS_BYTES:
        raise errors.InvalidArgument(f"status must be one line of at most {MAX_STATUS_BYTES} bytes")


def validate_format(kind: bytes | None, data: bytes) -> None:
    """EINVAL unless `data` is valid for the file kind: state.json holds one JSON object
    (UTF-8, no NaN or Infinity, at most MAX_STATE_DEPTH levels deep); status is one line
    (then only newlines) of at most MAX_STATUS_BYTES."""
    if kind == STATE_FILE:
        try:
            check_document(data, MAX_STATE_DEPTH)
        except ValueError as exc:
            raise errors.InvalidArgument(f"state.json must hold a JSON object: {exc}") from None
    elif kind == STATUS_FILE:
        FormatCheck(kind).feed(data)


class FormatCheck:
    """The incremental sibling of validate_format: fed a file's bytes in order from its
    start, it refuses (EINVAL) as soon as they cannot begin a valid file of the kind, so
    that write() can refuse them, where a shell sees it. `fed` counts the bytes fed.
    What it accepts may still be unfinished: validate_format checks the whole at close."""

    def __init__(self, kind: bytes):
        self.kind = kind
        self.fed = 0
        self._json = JsonPrefix(MAX_STATE_DEPTH) if kind == STATE_FILE else None
        self._line_ended = False   # status: a newline came, so only newlines may follow

    def feed(self, data: bytes) -> None:
        self.fed += len(data)
        if self._json is not None:
            try:
                self._json.feed(data)
            except ValueError as exc:
                raise errors.InvalidArgument(f"state.json must hold a JSON object: {exc}") from None
            return
        end = 0 if self._line_ended else data.find(b"\n")
        if end >= 0:
            self._line_ended = True
        if self.fed > MAX_STATUS_BYTES or (end >= 0 and data[end:].strip(b"\n")):
            raise errors.InvalidArgument(f"status must be one line of at most {MAX_STATUS_BYTES} bytes")
