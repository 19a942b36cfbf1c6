"""The shared store: one Redis (standalone, TLS or Cluster) carries the event log.

The URL and its options: url.py; the keys of a namespace: keys.py; the scripts that
change them: scripts.py; what Redis's replies (and their absence) mean: answers.py;
an append's deadline and lost answers: fence.py; WAIT/WAITAOF: durable.py.

Continuity. Redis may come back empty (no persistence, lost volume) or from an older
AOF. The marker hash holds a random id; this process remembers the id and the highest
seq it has seen. When the marker is gone or replaced, or the seq is below what was
seen, every call raises StoreUnavailable("... Redis lost its data ...") from then on,
logged at ERROR once, instead of serving a log that forks from what was applied.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time

import redis
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff

from ... import errors
from ...domain import events
from ...domain.events import Draft, Event
from ...domain.layout import scope_of
from ..base import Store
from ..url import redacted
from . import url as url_
from .answers import REDIS_ERRORS, RecordingRetry, answer_lost, decode_all, events_of, stream_entries
from .durable import DurableWait
from .fence import FENCE_MARGIN_S, FENCE_S, NOT_STORED, ServerClock, settle
from .keys import SNAPSHOTS_KEPT, Keys
from .scripts import FORMAT, Scripts

log = logging.getLogger(__name__)

# Chunks above this go in a round trip of their own before the script, so its deadline
# is not spent on sending them.
PIPELINED_CHUNK_BYTES = 1 << 20

# Redis lost data this process had seen: permanent for this process (EIO). A subclass
# of StoreUnavailable, so the journal can tell it from a passing outage.
StoreDataLost = errors.StoreDataLost


class RedisStore(Store):
    """Thread-safe: redis-py's clients keep a connection pool, and our own few fields
    (marker, highest seq seen, last time) are guarded by a lock never held across I/O.

    Every method raises StoreUnavailable (naming the cause) when Redis cannot be
    reached, times out, answers with an error, or has lost its data.
    """

    remote = True

    def __init__(self, url: str, *, expect_marker: str | None = None, create: bool = True):
        """Connect, PING, and create (unless not `create`) or check the namespace marker.

        StoreOpenError on a malformed URL, a refused connection, a wrong password, a
        namespace whose events outlived its marker, or `expect_marker` (an id the
        caller remembered from an earlier run) not matching: the daemon does not mount.
        """
        self.url = redacted(url)
        try:
            opts = url_.parse(url)
        except ValueError as exc:
            raise errors.StoreOpenError(f"{self.url}: not a valid Redis store URL: {exc}") from None
        self.namespace = ns = opts.namespace
        self._settle_s = opts.settle_timeout
        self._keys = Keys(ns)
        self._cluster = opts.cluster
        # One immediate retry on a dropped connection (a pooled socket that died with a
        # Redis restart); none on timeouts, which would double the wait. Retrying the
        # append script is safe: its done:<token> key makes it idempotent.
        retry = RecordingRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        timeout = opts.timeout
        kwargs = dict(socket_timeout=timeout, socket_connect_timeout=opts.connect_timeout, retry=retry)
        self._block_limit_s = max(0.05, timeout - 0.5)
        self._fence_s = max(FENCE_S, 2 * timeout)
        self._lock = threading.Lock()
        self._seen_seq = 0
        self._clock = ServerClock()   # appends carry a deadline in Redis's clock
        self._lost: str | None = None
        try:
            if opts.cluster:
                self._r = redis.cluster.RedisCluster.from_url(opts.redis_url, **kwargs)
            else:
                self._r = redis.Redis.from_url(opts.redis_url, **kwargs)
            self._r.ping()
            self._scripts = Scripts(self._r)
            self._durable = DurableWait(self._r, self._target, self.url, replicas=opts.wait_replicas,
                                        waitaof=opts.waitaof, timeout_ms=opts.wait_timeout_ms)
            if not create and not self._r.exists(self._keys.meta):
                self.close()
                raise errors.StoreOpenError(f"{self.url}: namespace {ns!r} holds no store (is the URL right?)")
            marker, seq, fmt, now_s, now_us = decode_all(self._scripts.init(
                keys=[self._keys.meta, self._keys.events], args=[secrets.token_hex(16), FORMAT]))
            self._clock.learn(int(now_s) * 1000 + int(now_us) / 1000)
        except redis.exceptions.AuthenticationError as exc:
            raise errors.StoreOpenError(f"{self.url}: Redis refused our credentials: {exc}") from None
        except (*REDIS_ERRORS, ValueError) as exc:
            raise errors.StoreOpenError(f"{self.url}: cannot open the Redis store: {exc}") from None
        if not marker:
            self.close()
            raise errors.StoreOpenError(
                f"{self.url}: namespace {ns!r} has events but no marker: Redis lost part of its data")
        if fmt != FORMAT:
            self.close()
            raise errors.StoreOpenError(f"{self.url}: store format {fmt}, this daemon reads {FORMAT}")
        if expect_marker is not None and marker != expect_marker:
            self.close()
            raise errors.StoreOpenError(
                f"{self.url}: namespace {ns!r} has marker {marker}, expected {expect_marker}: "
                "Redis lost its data or this is another store")
        self.marker = marker
        self._seen_seq = int(seq)

    @property
    def store_id(self) -> str:
        return self.marker

    # ---- helpers -----------------------------------------------------------------------

    def _target(self) -> dict:
        """For a command on no key: on a Cluster, the node that holds the namespace now."""
        return {"target_nodes": self._r.get_node_from_key(self._keys.meta)} if self._cluster else {}

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one Redis call, turning every Redis failure into StoreUnavailable."""
        if self._lost:
            raise StoreDataLost(self._lost)
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise errors.StoreUnavailable(
                f"{what} on {self.url} failed: {type(exc).__name__}: {exc}") from exc

    def _declare_lost(self, why: str) -> None:
        with self._lock:
            first = self._lost is None
            if first:
                self._lost = (f"{self.url} namespace {self.namespace!r}: Redis lost its data ({why}); "
                              "refusing to serve a log that differs from the one applied")
        if first:
            log.error("%s", self._lost)
        raise StoreDataLost(self._lost)

    def _known(self) -> tuple[str, int]:
        """(marker, highest seq seen), taken before a call whose answer is verified.

        Taken before, not after: another thread's append may raise the seq seen while
        our call is on the wire, and our (older) answer must not look like a loss.
        """
        with self._lock:
            return self.marker, self._seen_seq

    def _verify(self, marker: str, seq: int, known: tuple[str, int]) -> None:
        """Raise (and stay failed) if the namespace is not the one this process saw."""
        ours, seen = known
        if marker != ours:
            if seen > 0:
                self._declare_lost(f"marker {ours} is {'now ' + marker if marker else 'gone'}"
                                   f", after seq {seen} was seen")
            # Nothing was seen from the old namespace, so nothing can be mixed up: adopt.
            if marker:
                with self._lock:
                    self.marker = marker
            else:
                self._reinit()
        if seq < seen:
            self._declare_lost(f"its last seq is {seq}, but seq {seen} was seen")
        with self._lock:
            self._seen_seq = max(self._seen_seq, seq)

    def _reinit(self) -> None:
        marker, seq, *_ = decode_all(self._call(
            "init", self._scripts.init, keys=[self._keys.meta, self._keys.events], args=[secrets.token_hex(16), FORMAT]))
        if not marker:
            self._declare_lost("events exist without a marker")
        with self._lock:
            self.marker = marker
            self._seen_seq = max(self._seen_seq, int(seq))

    def _read_raw(self, after_seq: int, limit: int) -> tuple[int, list]:
        """(the namespace's last seq, stream entries after after_seq), verified."""
        known = self._known()
        marker, seq, entries = self._call(
            "read", self._scripts.read, keys=[self._keys.meta, self._keys.events], args=[f"{after_seq + 1}-0", limit])
        marker = marker.decode() if isinstance(marker, bytes) else marker
        self._verify(marker, int(seq), known)
        return int(seq), entries

    # ---- the Store interface -----------------------------------------------------------

    def check_continuity(self) -> int:
        """Raise StoreUnavailable if Redis lost data this process saw; else the last seq.

        Meant for the daemon's health check and the follower; one round trip.
        """
        return self._read_raw(0, 0)[0]

    def append(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool = True) -> list[Event]:
        """Raises StoreUnavailable only when nothing was stored. An append whose answer
        is lost (a timeout, a dropped connection) is settled before this returns: see
        _settle."""
        if not drafts and not chunks:
            return []
        if not drafts or (chunks and (self._cluster or sum(map(len, chunks.values())) > PIPELINED_CHUNK_BYTES)):
            # Content-addressed: chunks stored by an append that then fails do no harm.
            self._call("storing chunks", self._pipeline_with_chunks(chunks).execute)
            if not drafts:
                return []
            chunks = {}
        token = secrets.token_hex(12)
        keys = [self._keys.meta, self._keys.events, self._keys.done(token)]
        keys += [self._keys.scope(scope_of(d.path)) for d in drafts]
        # The time in the body is only for daemons older than the `t` field.
        bodies = [events.encode(time.time_ns(), d) for d in drafts]
        unanswered, relearned = "", False
        while True:
            known = self._known()
            sent = time.monotonic()
            deadline_ms = int(self._clock.now_ms() + self._fence_s * 1000)
            try:
                reply = decode_all(self._run_append(keys, [known[0], deadline_ms, *bodies], chunks))
            except errors.StoreUnavailable as exc:
                if isinstance(exc, StoreDataLost) or not answer_lost(exc.__cause__):
                    raise   # Redis answered, or was never reached: nothing was stored
                reply = self._settle(keys[2], sent, exc)
                unanswered = f"; first: {exc}"
            chunks = {}   # stored by the first try; a retry runs only the script
            if reply[0] == "late" and len(reply) == 3 and not relearned \
                    and time.monotonic() - sent < FENCE_MARGIN_S / 2:
                # Answered at once, yet past its deadline: Redis's clock is ahead of our
                # estimate (a clock step, a failover). The script wrote nothing: learn the
                # clock from its answer and try once more, with the same token.
                self._clock.learn(int(reply[1]) * 1000 + int(reply[2]) / 1000)
                relearned = True
                continue
            if reply[0] != "lost":
                break
            self._verify(reply[1], int(reply[2]), known)
            # not raised: nothing had been seen, and a fresh namespace was adopted
        if reply[0] in NOT_STORED:
            raise errors.StoreUnavailable(f"append on {self.url}: not stored ({NOT_STORED[reply[0]]}){unanswered}")
        first, now = map(int, reply[1].split())
        if reply[0] == "ok" and time.monotonic() - sent < FENCE_MARGIN_S / 2:
            self._clock.learn(now / 1e6)
        out = [Event(first + i, now, d.actor, d.type, d.path, d.payload) for i, d in enumerate(drafts)]
        with self._lock:
            self._seen_seq = max(self._seen_seq, out[-1].seq)
        if durable:
            self._durable.wait()
        return out

    def _settle(self, done_key: str, sent: float, cause: errors.StoreUnavailable) -> list[str]:
        give_up = sent + max(self._settle_s, self._fence_s + FENCE_MARGIN_S)
        return settle(self._scripts.fence, done_key, give_up, cause, self.url, self._settle_s)

    def _pipeline_with_chunks(self, chunks: dict[bytes, bytes]):
        """A pipeline that stores the chunks first. Content-addressed: a chunk stored
        twice, or left over by an append that then failed, does no harm."""
        pipe = self._r.pipeline(transaction=False)
        for digest, data in chunks.items():
            pipe.set(self._keys.chunk(digest), data)
        return pipe

    def _run_append(self, keys: list[str], args: list, chunks: dict[bytes, bytes]):
        """The append script; with chunks, in the same round trip as storing them (one
        connection runs a pipeline in order, so the chunks are stored before the events
        that name them). redis-py's Cluster pipelines refuse scripts: append stores them first there."""
        if not chunks:
            return self._call("append", self._scripts.append, keys=keys, args=args)
        pipe = self._pipeline_with_chunks(chunks)
        pipe.evalsha(self._scripts.append.sha, len(keys), *keys, *args)
        replies = self._call("append", pipe.execute, raise_on_error=False)
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                raise errors.StoreUnavailable(f"storing chunks on {self.url} failed: {reply}")
        if isinstance(replies[-1], redis.exceptions.NoScriptError):
            # A restarted or failed-over Redis forgot the script: the chunks are stored,
            # and the Script object loads the script again.
            return self._call("append", self._scripts.append, keys=keys, args=args)
        if isinstance(replies[-1], Exception):
            raise errors.StoreUnavailable(f"append on {self.url} failed: {replies[-1]}")
        return replies[-1]

    def sync(self) -> None:
        self._durable.wait()

    def read(self, after_seq: int, limit: int = 1000) -> list[Event]:
        return events_of(self._read_raw(after_seq, limit)[1])

    def last_seq(self) -> int:
        return self.check_continuity()

    def wait_for_events(self, after_seq: int, timeout: float) -> int:
        """Block in XREAD until an entry after `after_seq` arrives (no polling).

        The block is kept under the socket timeout, so a silent Redis still surfaces as
        an error instead of a hang. Whatever arrives is then read (and verified) by
        read(): this only waits.
        """
        reply = self._call("wait", self._r.xread, {self._keys.events: f"{after_seq}-0"}, count=1,
                           block=self._block_ms(timeout))
        entries = stream_entries(reply, self._keys.events)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else 0

    def wait_and_read(self, after_seq: int, timeout: float, limit: int = 1000) -> list[Event]:
        """One round trip: XREAD BLOCK, and in the same pipeline the marker, read right
        after the entries arrived. The marker is then at least as new as the log the
        entries came from, so a Redis that lost its data is still detected (as read()
        does in its script; a blocking XREAD cannot run inside a script)."""
        known = self._known()
        pipe = self._r.pipeline(transaction=False)
        pipe.xread({self._keys.events: f"{after_seq}-0"}, count=limit, block=self._block_ms(timeout))
        pipe.hmget(self._keys.meta, "id", "seq")
        reply, (marker, seq) = self._call("wait", pipe.execute)
        self._verify(marker.decode() if marker else "", int(seq or 0), known)
        return events_of(stream_entries(reply, self._keys.events))

    def _block_ms(self, timeout: float) -> int:
        return max(1, int(min(timeout, self._block_limit_s) * 1000))

    def get_chunk(self, digest: bytes) -> bytes:
        data = self._call("get_chunk", self._r.get, self._keys.chunk(digest))
        if data is None:
            self.check_continuity()  # a chunk missing because Redis lost everything is EIO
            raise self.chunks_missing([digest])
        return self.verified({digest: data})[digest]

    def get_chunks(self, digests: list[bytes]) -> list[bytes]:
        # One MGET: the keys share the namespace's hash tag, so one Cluster slot.
        datas = self._call("get_chunks", self._r.mget, [self._keys.chunk(d) for d in digests])
        if any(data is None for data in datas):
            self.check_continuity()  # missing because Redis lost everything: EIO
            raise self.chunks_missing([d for d, data in zip(digests, datas) if data is None])
        self.verified(dict(zip(digests, datas)))
        return datas

    def scope_seqs(self, scope: str) -> list[int]:
        self.check_continuity()
        return [int(x) for x in self._call("scope_seqs", self._r.lrange, self._keys.scope(scope), 0, -1)]

    def put_snapshot(self, seq: int, blob: bytes) -> None:
        self._call("put_snapshot", self._scripts.put_snapshot, keys=[self._keys.snaps, self._keys.snap(seq)],
                   args=[seq, blob, SNAPSHOTS_KEPT, self._keys.snap_prefix])

    def latest_snapshot(self, max_seq: int | None = None) -> tuple[int, bytes] | None:
        self.check_continuity()
        top = "+inf" if max_seq is None else max_seq
        seqs = self._call("latest_snapshot", self._r.zrevrangebyscore, self._keys.snaps, top, "-inf", 0, 1)
        if not seqs:
            return None
        seq = int(seqs[0])
        blob = self._call("latest_snapshot", self._r.get, self._keys.snap(seq))
        if blob is None:  # pruned between the two calls by another daemon: ask again
            return self.latest_snapshot(max_seq)
        return seq, blob

    def usage(self) -> dict[str, int]:
        """Memory of the Redis node holding this namespace (not just this namespace)."""
        info = self._call("usage", self._r.info, "memory", **self._target())
        used = int(info.get("used_memory", 0))
        limit = int(info.get("maxmemory", 0)) or int(info.get("total_system_memory", 0))
        return {"used_bytes": used, "free_bytes": max(limit - used, 0)}

    def close(self) -> None:
        try:
            self._r.close()
        except REDIS_ERRORS:
            pass
