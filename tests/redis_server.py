"""Moved to tests.harness.redis_servers: this shim keeps `from redis_server import ...`
working for the branches written before the move. Delete it once they are merged."""
from tests.harness.redis_servers import *  # noqa: F401,F403
