"""What Redis's replies, and their absence, mean: errors that say "Redis cannot serve
us now", whether a failed call's command may have run, and stream entries as events."""
from __future__ import annotations

import dataclasses
import threading

import redis
import redis.exceptions
from redis.retry import Retry

from ...domain import events
from ...domain.events import Event

# Errors meaning "Redis cannot serve us now" (RedisClusterException is no RedisError).
REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)

_attempts = threading.local()


class RecordingRetry(Retry):
    """redis-py's Retry, keeping (per thread) the error of every try of the last call: a
    retry refused at connect says nothing of the first try, whose answer may have been
    lost after Redis ran it (Redis killed mid-call, then down)."""

    def call_with_retry(self, do, fail, *args, **kwargs):
        seen = _attempts.errors = []

        def failed(error, *rest):
            seen.append(error)
            return fail(error, *rest)
        return super().call_with_retry(do, failed, *args, **kwargs)


def answer_lost(exc: BaseException | None) -> bool:
    """Might Redis have run the command whose call failed with `exc`? Yes unless Redis
    answered (an error reply) or was never reached (every try failed to connect)."""
    tries = getattr(_attempts, "errors", None)
    for error in tries if tries and exc in tries else [exc]:
        if isinstance(error, redis.exceptions.BusyLoadingError):
            continue   # an answer (LOADING: Redis ran nothing), though redis-py files it as a ConnectionError
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)) \
                and "connecting to" not in str(error):
            return True
    return False


def decode_all(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def stream_entries(reply, stream_key: str) -> list:
    """XREAD's entries of our one stream: RESP2 gives [[key, entries]], RESP3 a map."""
    if not reply:
        return []
    stream = reply[stream_key.encode()] if isinstance(reply, dict) else reply[0][1]
    # Entries are (id, fields) pairs; RESP3 wraps them in one more list.
    first = stream[0] if stream else None
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], (list, tuple)):
        return first
    return stream


def events_of(entries: list) -> list[Event]:
    out = []
    for entry_id, fields in entries:
        seq = int(entry_id.split(b"-", 1)[0])
        # RESP2 gives [field, value, ...]; RESP3 may give a map.
        fields = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2]))
        event = events.decode(seq, fields[b"b"])
        if b"t" in fields:   # the time Redis assigned (older entries: the one in the body)
            event = dataclasses.replace(event, time_ns=int(fields[b"t"]))
        out.append(event)
    return out
