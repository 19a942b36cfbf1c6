"""Moved to tests.harness (mounts, scenarios): this shim keeps `from mounting import ...`
working for the branches written before the move. Delete it once they are merged."""
from tests.harness.mounts import *  # noqa: F401,F403
from tests.harness.mounts import Mount, started  # noqa: F401
from tests.harness.scenarios import *  # noqa: F401,F403
