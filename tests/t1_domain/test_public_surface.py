"""lighthousefs/__init__.py is the public surface: Client, open_store, errors and
__version__, nothing else in __all__; and importing it stays cheap (the daemon and the
CLI import it first)."""
import subprocess
import sys
import tomllib

import lighthousefs
from tests.harness import REPO


def test_all_names_the_public_surface_and_each_resolves():
    assert sorted(lighthousefs.__all__) == ["Client", "__version__", "errors", "open_store"]
    from lighthousefs.api import Client
    from lighthousefs.store import open_store
    assert lighthousefs.Client is Client
    assert lighthousefs.open_store is open_store
    assert lighthousefs.errors is sys.modules["lighthousefs.errors"]
    assert set(lighthousefs.__all__) <= set(dir(lighthousefs))


def test_star_import_gives_exactly_all():
    names: dict = {}
    exec("from lighthousefs import *", names)
    assert sorted(n for n in names if n != "__builtins__") == sorted(lighthousefs.__all__)


def test_an_unknown_name_is_an_attribute_error():
    try:
        lighthousefs.NoSuchThing
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("lighthousefs.NoSuchThing resolved")


def test_the_version_is_the_package_version():
    with open(REPO / "pyproject.toml", "rb") as f:
        assert lighthousefs.__version__ == tomllib.load(f)["project"]["version"]


def test_importing_the_package_loads_neither_the_engine_nor_the_event_loop():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, lighthousefs; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    heavy = [m for m in loaded if m.split(".")[0] in ("trio", "pyfuse3", "redis", "msgpack", "prometheus_client")
             or m in ("lighthousefs.api", "lighthousefs.store", "lighthousefs.engine", "lighthousefs.daemon")]
    assert heavy == []
