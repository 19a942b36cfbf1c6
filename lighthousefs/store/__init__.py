"""The stores: where events, chunks and snapshots live.

`base.Store` is the interface every store implements (and its errors are in
lighthousefs.errors); `sqlite` is the embedded store, `redis` the shared one. This
module is the registry: `open_store(url)` picks the store by the URL's scheme.
"""
from __future__ import annotations

import os
import urllib.parse

from .. import errors
from .base import Store, report_corrupt
from .url import redacted

__all__ = ["Store", "default_url", "open_store", "report_corrupt"]


def default_url() -> str:
    import platformdirs
    return "sqlite://" + os.path.join(platformdirs.user_data_dir("lighthousefs"), "lighthouse.db")


def open_store(url: str, create: bool = True) -> Store:
    """Open the store named by `url`; StoreOpenError with a clear reason if it cannot be.

    Without `create` (commands that only read), a store that does not exist yet is an
    error rather than made empty. With it, only the default store's directory is made:
    a typo in a path given by hand must not quietly start a second store.
    """
    shown = redacted(url)   # messages never carry a password, even of a mistyped URL
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:   # e.g. "Invalid IPv6 URL": a mistyped URL, not a bug
        raise errors.StoreOpenError(f"{shown}: not a valid store URL: {exc}") from None
    if scheme == "sqlite":
        from .sqlite import SQLiteStore
        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise errors.StoreOpenError(f"{shown}: the SQLite path must be absolute (sqlite:///path/to.db)")
        if create and url == default_url():
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return SQLiteStore(path, create=create)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise errors.StoreOpenError(f"{shown}: the Redis store is not available: {exc}") from None
        return RedisStore(url, create=create)
    raise errors.StoreOpenError(f"{shown}: unknown store (use sqlite:///path or redis://host:port/db)")
