"""Fixtures: real lighthousefs mounts in temporary directories, always unmounted.

The log checker (tests/checklogs.py, loaded here) fails a test that logs a WARNING or
ERROR it did not declare with @pytest.mark.expect_log, in this process or in the log of
a daemon it mounted, and any test whose daemon logged a traceback or "unexpectedly",
even when every assertion passed.
"""
from __future__ import annotations

import os

import pytest

from tests.harness.mounts import Mount, mount, unmount_quietly
from tests.harness.redis_servers import RedisCluster3, RedisServer

pytest_plugins = ["tests.checklogs", "pytester"]


def pytest_collection_modifyitems(config, items):
    if not os.path.exists("/dev/fuse"):
        skip = pytest.mark.skip(reason="needs /dev/fuse")
        for item in items:
            if "mount" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory):
    """What daemons remember of the stores they mounted (continuity.py) goes to this
    run's directory, not the user's: the daemons started by the tests inherit it."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = old


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite://{tmp_path}/store.db"


@pytest.fixture
def mounter(tmp_path, store_url):
    """Mount lighthousefs as often as a test likes; everything is unmounted at the end."""
    mounts: list[Mount] = []

    def _mount(name: str = "mnt", *args: str, store: str | None = None, env: dict | None = None) -> Mount:
        """store="": no --store (the URL comes by `env` or --store-file in args)."""
        attempted.append(tmp_path / name)   # unmounted at the end even if mount() raised
        m = mount(tmp_path / name, store_url if store is None else store, *args, log=tmp_path / f"{name}.log",
                  env=env)
        mounts.append(m)
        return m

    attempted: list = []
    yield _mount
    pids = {m.path: m.pid for m in mounts}   # the latest mount of each path
    for path in attempted:
        unmount_quietly(path, pids.get(path))   # their logs are read after this (checklogs.py)


@pytest.fixture
def mnt(mounter) -> Mount:
    return mounter()


@pytest.fixture(scope="session")
def cluster():
    """One 3-master Redis Cluster for the whole run (tests use their own namespaces)."""
    with RedisCluster3() as c:
        yield c


@pytest.fixture
def own_server():
    """A redis-server this test may kill, freeze, wipe or restart."""
    with RedisServer() as srv:
        yield srv
