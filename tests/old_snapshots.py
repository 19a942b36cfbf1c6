"""Snapshots as older daemons wrote them, to check that they still load."""
import hashlib

import msgpack

from lighthousefs.domain.snapshot import SNAPSHOT_MAGIC


def dump_v1(tree) -> bytes:
    """Version 1: one row (Node.dump) per node."""
    live = [node for node in tree.nodes.values() if node.nlink > 0]
    body = msgpack.packb([1, tree.applied_seq, [node.dump() for node in live]], use_bin_type=True)
    return b"".join((SNAPSHOT_MAGIC, hashlib.sha256(body).digest(), body))
