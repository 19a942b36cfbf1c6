"""The store URL as a secret: where it comes from, and how it may be shown.

A Redis URL may carry a password (`redis://:PASSWORD@host`, `redis://user:PASSWORD@host`).
It must never reach a process's argv (every user reads /proc/<pid>/cmdline), a log line or
a file of the mount: so it is given by --store-file, systemd's credentials or the
environment (only the process's owner reads /proc/<pid>/environ), and shown only through
`redacted()`.
"""
from __future__ import annotations

import os
import sys

ENV = "LIGHTHOUSE_STORE"
CREDENTIAL = "store"   # systemd: LoadCredential=store:/etc/lighthousefs/store-url


def redacted(url: str) -> str:
    """`url` with its password (or a user-info without one, which may be a token)
    replaced by ***: `redis://:***@host:6379/0`, `redis://user:***@host`. Also for
    URLs that do not parse: whatever comes before the last @ of the authority goes."""
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


class StoreUrlError(Exception):
    """The URL's source was named but cannot be read (a message for the user)."""


def read_file(path: str) -> str:
    """The URL kept in a file (its first line; a trailing newline is not part of it)."""
    try:
        with open(path, encoding="utf-8") as f:
            url = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreUrlError(f"cannot read the store URL from {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    if not url:
        raise StoreUrlError(f"{path} holds no store URL")
    return url


def resolve(store: str | None, store_file: str | None, default: str,
            environ: os._Environ | dict = os.environ) -> str:
    """The store URL by precedence: --store, --store-file, $CREDENTIALS_DIRECTORY/store
    (systemd's LoadCredential=), $LIGHTHOUSE_STORE, the default.
    StoreUrlError if a file named cannot be read or is empty."""
    if store:
        return store
    if store_file:
        return read_file(store_file)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and os.path.exists(os.path.join(credentials, CREDENTIAL)):
        url = read_file(os.path.join(credentials, CREDENTIAL))
        if environ.get(ENV) and environ[ENV] != url:
            print(f"lighthouse: ${ENV} is not used: the store URL comes from systemd's credential "
                  f"$CREDENTIALS_DIRECTORY/{CREDENTIAL}", file=sys.stderr)
        return url
    return environ.get(ENV) or default


def child_environment(url: str, environ: os._Environ | dict = os.environ) -> dict[str, str]:
    """The environment for a child `lighthouse` process that must use `url`: the URL
    travels in $LIGHTHOUSE_STORE, never in argv; systemd's credentials directory is
    not passed on, or it would win over the URL the parent resolved."""
    env = {k: v for k, v in environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env[ENV] = url
    return env
