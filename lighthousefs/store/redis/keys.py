"""The keys of a namespace, and what each holds.

Every key of a namespace carries the hash tag `{ns}`, so a namespace lives on one
Cluster slot and the Lua scripts (scripts.py) may touch all its keys atomically:

    lh:{ns}:meta          hash: id (random marker), format, seq (last assigned), time
    lh:{ns}:events        stream; entry id `<seq>-0`, field `b` = events.encode(...), field
                          `t` = the event's time in ns, which Redis assigned (entries
                          without `t`, from older daemons, carry their time in `b`)
    lh:{ns}:scope:<s>     list of the seqs whose path lies in scope <s>, ascending
    lh:{ns}:chunk:<hex>   string: a content chunk, named by its hash
    lh:{ns}:snaps         sorted set of snapshot seqs; blobs in lh:{ns}:snap:<seq>
    lh:{ns}:done:<token>  "<first seq> <time>" of an append, kept DONE_TTL_S: makes a
                          retried append (reply lost to a dropped connection) return the
                          first result instead of appending twice; or "fenced": an append
                          whose answer was lost and that had not run yet never runs

Why a stream with ids `<seq>-0` rather than a sorted set: XRANGE by id is a range read
by seq with no score precision limits, XADD refuses an id at or below the last one (a
second guard against reuse of a seq), and the follower blocks on XREAD instead of
polling. Only the append script writes it; an `XADD *` by anything else would break the
seq = id invariant.

One stream per namespace for now; DESIGN.md's per-project streams (positions as
(stream, seq)) are a later step, and will put each project's stream under its own tag.
"""
from __future__ import annotations

import re

from ...domain import events

NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")   # fullmatch: `$` passes "ns\n"
DONE_TTL_S = 600
SNAPSHOTS_KEPT = 3


class Keys:
    """The key names of one namespace."""

    def __init__(self, namespace: str):
        prefix = f"lh:{{{namespace}}}:"
        self.meta = prefix + "meta"
        self.events = prefix + "events"
        self.snaps = prefix + "snaps"
        self.snap_prefix = prefix + "snap:"
        self.chunk_prefix = prefix + "chunk:"
        self.scope_prefix = prefix + "scope:"
        self.done_prefix = prefix + "done:"

    def snap(self, seq: int) -> str:
        return f"{self.snap_prefix}{seq}"

    def chunk(self, digest: bytes) -> str:
        return self.chunk_prefix + digest.hex()

    def done(self, token: str) -> str:
        return self.done_prefix + token

    def scope(self, scope: str) -> bytes:
        """The key of a scope's list, as bytes: a name in it may not be UTF-8."""
        return (self.scope_prefix + scope).encode("utf-8", events.PATH_ERRORS)
