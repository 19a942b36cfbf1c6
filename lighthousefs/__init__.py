"""lighthousefs: the shared state of a multi-agent system as a filesystem, event-sourced.

The public surface is this module's: `Client` (the Python API: append and read events,
read and write files, without a mount), `open_store` (a store by URL), `errors` (every
error the core raises, each with its errno) and `__version__`. Everything else is
private to the package and may change.

The package is in layers; a module imports only from the layers below it (a test,
tests/t1_domain/test_layers.py, holds them to it):

    domain/   the rules and the data, pure: layout, events, rules, tree, chunks (no I/O,
              no clock, no trio, no pyfuse3)
    store/    where events, chunks and snapshots live: SQLite, Redis, the breaker
    engine/   the journal (commit, follow, project) and what a host remembers of a store
    files/    open files: the write buffer, the chunk cache, files not yet committed
    views/    what the mount shows besides the tree: events, .history, .lighthouse
    fs/       the FUSE Operations and their one error boundary
    daemon, cli, api   the entry points: a mount's lifetime, `lighthouse`, Client
    errors, metrics, mounttable   leaves anyone may import

Importing this module is cheap (the daemon and `lighthouse` import it first): Client
and open_store are loaded on first use.
"""
from . import errors
from ._version import __version__

__all__ = ["Client", "errors", "open_store", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so `import lighthousefs` (every entry point's first step)
    # pulls in neither the store backends nor the engine.
    if name == "Client":
        from .api import Client
        return Client
    if name == "open_store":
        from .store import open_store
        return open_store
    raise AttributeError(f"module 'lighthousefs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
