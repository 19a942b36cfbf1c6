"""What this host remembers of each store it mounted: the store's id and the highest
sequence number seen, so a store that lost what it had is refused at mount.

A SQLite file truncated to 0 bytes, deleted or swapped for an older copy, or a Redis
that restarted empty, opens as a valid store (an empty or shorter log). Mounted, it
would serve an older namespace as if it were the current one, and new events would fork
from the lost ones. Each store carries a random id (SQLite: in its meta table; Redis:
its marker); the daemon keeps the id and the last seq it applied in a small file per
store under the user's state directory, and `lighthouse mount` refuses a store whose id
or seq went back. An operator who replaced the store on purpose deletes that file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

from .. import errors

log = logging.getLogger(__name__)
_warned: set[str] = set()


def state_file(url: str) -> str:
    """The file remembering the store at `url` (redacted: no password). Named by a hash,
    so the name says nothing about the store."""
    import platformdirs
    name = hashlib.sha256(url.encode()).hexdigest()[:24]
    return os.path.join(platformdirs.user_state_dir("lighthousefs"), "stores", name + ".json")


def _remembered(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read())
        return state if isinstance(state, dict) and isinstance(state.get("id"), str) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read what this host remembers of the store (%s); not checked", path, exc)
        return None


def check(url: str, store_id: str, last_seq: int) -> None:
    """StoreOpenError if this host saw the store at `url` with another id, or further
    along than `last_seq`: it lost data or was replaced."""
    path = state_file(url)
    state = _remembered(path)
    if state is None:
        return
    seen_id, seen_seq = state["id"], int(state.get("seq", 0))
    if store_id != seen_id:
        why = f"its id is {store_id}, but this host mounted it as {seen_id} up to event {seen_seq}"
    elif last_seq < seen_seq:
        why = f"its log ends at event {last_seq}, but this host saw event {seen_seq}"
    else:
        return
    raise errors.StoreOpenError(
        f"{url} lost data or was replaced ({why}). Restore it from a backup; to use it as it is, "
        f"delete {path}")


def remember(url: str, store_id: str, seq: int) -> None:
    """Keep the store's id and the highest seq applied (never lowered for the same id).
    A state directory that cannot be written costs only the check: a warning."""
    path = state_file(url)
    state = _remembered(path)
    if state is not None and state["id"] == store_id:
        seq = max(seq, int(state.get("seq", 0)))
        if seq == int(state.get("seq", 0)):
            return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"url": url, "id": store_id, "seq": seq}, f)
        os.replace(tmp, path)
    except OSError as exc:
        if path not in _warned:   # once: this is retried every few seconds
            _warned.add(path)
            log.warning("cannot remember store %s in %s (%s): a loss of its data will not be detected at mount",
                        url, path, exc)
