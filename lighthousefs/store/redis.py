"""The shared store: one Redis (standalone, TLS or Cluster) carries the event log.

URLs: `redis://[:password@]host:port/db`, `rediss://...` (TLS) and
`redis+cluster://host:port` / `rediss+cluster://...` (Redis Cluster). Query
parameters of our own (those in REDIS_PY_PARAMS go to redis-py, e.g. `ssl_ca_certs`;
any other is refused, so a typo is not silently ignored or sent to redis-py):

    namespace=NAME       the log to use (default `default`); many may share one Redis
    timeout=S            socket and connect timeout in seconds (default 2): never hang
    connect_timeout=S    connect timeout alone (default: `timeout`)
    wait_replicas=N      after each append, WAIT for N replicas (default 0)
    waitaof=1            after each append, WAITAOF until the primary's AOF is fsynced
                         (Redis >= 7.2; older servers: warned once, then skipped)
    wait_timeout_ms=MS   how long WAIT/WAITAOF may take (default 1000)
    settle_timeout=S     how long an append whose answer was lost asks Redis whether
                         it ran (default 20; see _settle)

Durability: an append is acknowledged once Redis executed it. That is durable only as
far as Redis persists it: run Redis with `appendonly yes` and `appendfsync always`
(nothing acknowledged is lost) or `everysec` (up to a second is lost on a crash of the
host). `waitaof=1` makes everysec as safe as always for our appends.

Layout. Every key of a namespace carries the hash tag `{ns}`, so a namespace lives on
one Cluster slot and the Lua scripts below may touch all its keys atomically:

    lh:{ns}:meta          hash: id (random marker), format, seq (last assigned), time
    lh:{ns}:events        stream; entry id `<seq>-0`, field `b` = events.encode(...), field
                          `t` = the event's time in ns, which Redis assigned (entries
                          without `t`, from older daemons, carry their time in `b`)
    lh:{ns}:scope:<s>     list of the seqs whose path lies in scope <s>, ascending
    lh:{ns}:chunk:<hex>   string: a content chunk, named by its hash
    lh:{ns}:snaps         sorted set of snapshot seqs; blobs in lh:{ns}:snap:<seq>
    lh:{ns}:done:<token>  "<first seq> <time>" of an append, kept 10 min: makes a retried
                          append (reply lost to a dropped connection) return the first
                          result instead of appending twice; or "fenced": an append whose
                          answer was lost and that had not run yet never runs (see append)

Why a stream with ids `<seq>-0` rather than a sorted set: XRANGE by id is a range read
by seq with no score precision limits, XADD refuses an id at or below the last one (a
second guard against reuse of a seq), and the follower can later block on XREAD
instead of polling. Only the append script writes it; an `XADD *` by anything else
would break the seq = id invariant.

One stream per namespace for now; DESIGN.md's per-project streams (positions as
(stream, seq)) are a later step, and will put each project's stream under its own tag.

Continuity. Redis may come back empty (no persistence, lost volume) or from an older
AOF. The marker hash holds a random id; this process remembers the id and the highest
seq it has seen. When the marker is gone or replaced, or the seq is below what was
seen, every call raises StoreUnavailable("... Redis lost its data ...") from then on,
logged at ERROR once, instead of serving a log that forks from what was applied.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
import time
import urllib.parse

import redis
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import errors
from ..domain import events
from ..domain.events import Draft, Event
from ..domain.layout import scope_of
from .base import Store
from .url import redacted

log = logging.getLogger(__name__)

FORMAT = "1"
SNAPSHOTS_KEPT = 3
DONE_TTL_S = 600
# An append Redis runs later than this (or twice the socket timeout, if more) after it
# was sent is refused (its deadline, in Redis's clock); one whose answer is lost is
# settled by asking Redis (see _settle).
FENCE_S = 4.0
FENCE_MARGIN_S = 1.0
FENCE_RETRY_S = 0.2
# How long an append whose answer was lost keeps asking Redis whether it ran, by default
# (URL: settle_timeout): only an answer tells (it may have run just before Redis froze or
# died). Past this, EIO, and the outcome is logged as unknown.
SETTLE_S = 20.0
# Chunks above this go in a round trip of their own before the script, so its deadline
# is not spent on sending them.
PIPELINED_CHUNK_BYTES = 1 << 20
NOT_STORED = {"late": "Redis ran it past its deadline",
              "unknown": "Redis did not answer within settle_timeout whether it ran it",
              "fenced": "its answer was lost, and it had not run; now it never will"}
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")   # fullmatch: `$` passes "ns\n"
OUR_PARAMS = ("namespace", "timeout", "connect_timeout", "wait_replicas", "waitaof", "wait_timeout_ms",
              "settle_timeout")
# redis-py's own URL parameters that we pass on: TLS and connection tuning.
REDIS_PY_PARAMS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                   "ssl_check_hostname", "ssl_min_version", "client_name", "health_check_interval",
                   "socket_keepalive", "max_connections")
# Errors meaning "Redis cannot serve us now" (RedisClusterException is no RedisError).
REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)



_attempts = threading.local()


class _RecordingRetry(Retry):
    """redis-py's Retry, keeping (per thread) the error of every try of the last call: a
    retry refused at connect says nothing of the first try, whose answer may have been
    lost after Redis ran it (Redis killed mid-call, then down)."""

    def call_with_retry(self, do, fail, *args, **kwargs):
        seen = _attempts.errors = []

        def failed(error, *rest):
            seen.append(error)
            return fail(error, *rest)
        return super().call_with_retry(do, failed, *args, **kwargs)


def _answer_lost(exc: BaseException | None) -> bool:
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


# Redis lost data this process had seen: permanent for this process (EIO). A subclass
# of StoreUnavailable, so the journal can tell it from a passing outage.
StoreDataLost = errors.StoreDataLost


# Creates the marker of a fresh namespace; returns {id, seq, format, server time (s, us)}.
# An events stream without a marker means part of the data is gone: id '' tells the caller.
INIT = """
local now = redis.call('TIME')
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq', 'format')
if meta[1] then return {meta[1], meta[2] or '0', meta[3] or '', now[1], now[2]} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'', '', '', now[1], now[2]} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'seq', '0', 'time', '0', 'format', ARGV[2])
return {ARGV[1], '0', ARGV[2], now[1], now[2]}
"""

# KEYS: meta, events, done:<token>, then one scope list per event.
# ARGV: marker id, deadline (ms of the server's clock; 0: none), then one body per event.
# Redis assigns the time (its clock, never below the last time stored), so appends never
# conflict. Times are decimal strings: Lua numbers are doubles, ns times exceed 2^53.
# Replies: {'ok', '<first> <time>'}; {'done', same} for a token that already ran;
# {'fenced'} / {'late', s, us}: refused, nothing written ('late' with Redis's TIME);
# {'lost', id, seq}.
# Nothing is written before every check passed (a failing script is not rolled back).
APPEND = """
local done = redis.call('GET', KEYS[3])
if done == 'fenced' then return {'fenced'} end
if done then return {'done', done} end
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq', 'time')
if meta[1] ~= ARGV[1] then return {'lost', meta[1] or '', meta[2] or '0'} end
local now = redis.call('TIME')
local deadline = tonumber(ARGV[2])
if deadline > 0 and tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
  return {'late', now[1], now[2]}
end
local last, t = meta[3] or '0', now[1] .. string.format('%06d', tonumber(now[2])) .. '000'
if #t < #last or (#t == #last and t < last) then t = last end
local n = #ARGV - 2
local first = redis.call('HINCRBY', KEYS[1], 'seq', n) - n + 1
for i = 1, n do
  local seq = string.format('%d', first + i - 1)
  redis.call('XADD', KEYS[2], seq .. '-0', 'b', ARGV[2 + i], 't', t)
  redis.call('RPUSH', KEYS[3 + i], seq)
end
redis.call('HSET', KEYS[1], 'time', t)
local result = string.format('%d', first) .. ' ' .. t
redis.call('SET', KEYS[3], result, 'EX', DONE_TTL_S)
return {'ok', result}
""".replace("DONE_TTL_S", str(DONE_TTL_S))

# KEYS: done:<token>. An append whose answer was lost: what it stored ("<first> <time>"),
# or nil after making sure it never runs (done:<token> = 'fenced').
FENCE = """
local done = redis.call('GET', KEYS[1])
if done then return done end
redis.call('SET', KEYS[1], 'fenced', 'EX', DONE_TTL_S)
return false
""".replace("DONE_TTL_S", str(DONE_TTL_S))

# KEYS: meta, events. ARGV: first stream id wanted, count (0: only the marker).
READ = """
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq')
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {meta[1] or '', meta[2] or '0', entries}
"""

# KEYS: snaps, snap:<seq>. ARGV: seq, blob, kept, key prefix of blobs.
PUT_SNAPSHOT = """
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
local old = redis.call('ZRANGE', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
for _, seq in ipairs(old) do
  redis.call('DEL', ARGV[4] .. seq)
  redis.call('ZREM', KEYS[1], seq)
end
return #old
"""


def _parse(url: str) -> tuple[str, bool, dict[str, str]]:
    """(URL for redis-py, cluster?, our options). ValueError on a malformed URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    cluster = scheme.endswith("+cluster")
    if cluster:
        scheme = scheme[: -len("+cluster")]
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = [k for k in query if k not in OUR_PARAMS + REDIS_PY_PARAMS]
    if unknown:
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(OUR_PARAMS + REDIS_PY_PARAMS)})")
    ours = {k: v[-1] for k, v in query.items() if k in OUR_PARAMS}
    rest = urllib.parse.urlencode([(k, x) for k, v in query.items() if k not in OUR_PARAMS for x in v])
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, rest, "")), cluster, ours


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
            redis_url, cluster, opts = _parse(url)
            self.namespace = opts.get("namespace", "default")
            if not NAMESPACE_RE.fullmatch(self.namespace):
                raise ValueError(f"namespace {self.namespace!r} must match {NAMESPACE_RE.pattern}")
            timeout = float(opts.get("timeout", 2.0))
            connect_timeout = float(opts.get("connect_timeout", timeout))
            self._wait_replicas = int(opts.get("wait_replicas", 0))
            self._waitaof = opts.get("waitaof", "0") not in ("0", "", "false", "no")
            self._wait_timeout_ms = int(opts.get("wait_timeout_ms", 1000))
            self._settle_s = float(opts.get("settle_timeout", SETTLE_S))
        except ValueError as exc:
            raise errors.StoreOpenError(f"{self.url}: not a valid Redis store URL: {exc}") from None
        ns = self.namespace
        self._k_meta = f"lh:{{{ns}}}:meta"
        self._k_events = f"lh:{{{ns}}}:events"
        self._k_snaps = f"lh:{{{ns}}}:snaps"
        self._p_snap = f"lh:{{{ns}}}:snap:"
        self._p_chunk = f"lh:{{{ns}}}:chunk:"
        self._p_scope = f"lh:{{{ns}}}:scope:"
        self._p_done = f"lh:{{{ns}}}:done:"
        self._cluster = cluster
        # One immediate retry on a dropped connection (a pooled socket that died with a
        # Redis restart); none on timeouts, which would double the wait. Retrying the
        # append script is safe: its done:<token> key makes it idempotent.
        retry = _RecordingRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        kwargs = dict(socket_timeout=timeout, socket_connect_timeout=connect_timeout, retry=retry)
        self._block_limit_s = max(0.05, timeout - 0.5)
        self._fence_s = max(FENCE_S, 2 * timeout)
        self._lock = threading.Lock()
        self._seen_seq = 0
        # (the server's clock in ms, our monotonic clock in s) when last learnt: appends
        # carry a deadline in the server's clock.
        self._clock = (0.0, time.monotonic())
        self._lost: str | None = None
        self._waitaof_warned = False
        try:
            if cluster:
                self._r = redis.cluster.RedisCluster.from_url(redis_url, **kwargs)
            else:
                self._r = redis.Redis.from_url(redis_url, **kwargs)
            self._r.ping()
            self._init_script = self._r.register_script(INIT)
            self._append_script = self._r.register_script(APPEND)
            self._read_script = self._r.register_script(READ)
            self._snap_script = self._r.register_script(PUT_SNAPSHOT)
            self._fence_script = self._r.register_script(FENCE)
            if not create and not self._r.exists(self._k_meta):
                self.close()
                raise errors.StoreOpenError(f"{self.url}: namespace {ns!r} holds no store (is the URL right?)")
            marker, seq, fmt, now_s, now_us = self._decode_all(self._init_script(
                keys=[self._k_meta, self._k_events], args=[secrets.token_hex(16), FORMAT]))
            self._learn_clock(int(now_s) * 1000 + int(now_us) / 1000)
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

    @staticmethod
    def _decode_all(values) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    def _scope_key(self, scope: str) -> bytes:
        """The key of a scope's list, as bytes: a name in it may not be UTF-8."""
        return (self._p_scope + scope).encode("utf-8", events.PATH_ERRORS)

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
        marker, seq, *_ = self._decode_all(self._call(
            "init", self._init_script, keys=[self._k_meta, self._k_events], args=[secrets.token_hex(16), FORMAT]))
        if not marker:
            self._declare_lost("events exist without a marker")
        with self._lock:
            self.marker = marker
            self._seen_seq = max(self._seen_seq, int(seq))

    def _read_raw(self, after_seq: int, limit: int) -> tuple[int, list]:
        """(the namespace's last seq, stream entries after after_seq), verified."""
        known = self._known()
        marker, seq, entries = self._call(
            "read", self._read_script, keys=[self._k_meta, self._k_events], args=[f"{after_seq + 1}-0", limit])
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
        keys = [self._k_meta, self._k_events, self._p_done + token]
        keys += [self._scope_key(scope_of(d.path)) for d in drafts]
        # The time in the body is only for daemons older than the `t` field.
        bodies = [events.encode(time.time_ns(), d) for d in drafts]
        unanswered, relearned = "", False
        while True:
            known = self._known()
            sent = time.monotonic()
            deadline_ms = int(self._server_ms() + self._fence_s * 1000)
            try:
                reply = self._decode_all(self._run_append(keys, [known[0], deadline_ms, *bodies], chunks))
            except errors.StoreUnavailable as exc:
                if isinstance(exc, StoreDataLost) or not _answer_lost(exc.__cause__):
                    raise   # Redis answered, or was never reached: nothing was stored
                reply = self._settle(keys[2], sent, exc)
                unanswered = f"; first: {exc}"
            chunks = {}   # stored by the first try; a retry runs only the script
            if reply[0] == "late" and len(reply) == 3 and not relearned \
                    and time.monotonic() - sent < FENCE_MARGIN_S / 2:
                # Answered at once, yet past its deadline: Redis's clock is ahead of our
                # estimate (a clock step, a failover). The script wrote nothing: learn the
                # clock from its answer and try once more, with the same token.
                self._learn_clock(int(reply[1]) * 1000 + int(reply[2]) / 1000)
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
            self._learn_clock(now / 1e6)
        out = [Event(first + i, now, d.actor, d.type, d.path, d.payload) for i, d in enumerate(drafts)]
        with self._lock:
            self._seen_seq = max(self._seen_seq, out[-1].seq)
        if durable:
            self._wait_durable()
        return out

    def _learn_clock(self, server_ms: float) -> None:
        """Redis's clock read `server_ms` during a short round trip that just ended. The
        estimate is behind by at most that round trip, never ahead: a deadline can come
        early (an append refused), never late (see _settle)."""
        with self._lock:
            self._clock = (server_ms, time.monotonic())

    def _server_ms(self) -> float:
        with self._lock:
            server_ms, at = self._clock
        return server_ms + (time.monotonic() - at) * 1000

    def _settle(self, done_key: str, sent: float, cause: errors.StoreUnavailable) -> list[str]:
        """The outcome of an append whose answer was lost: the script may have run, may
        still be waiting in a frozen Redis, or may never arrive. Ask (FENCE) until Redis
        answers: it either had stored the events (their result) or has not, and then
        never will (its token is fenced; past its deadline Redis refuses the script
        anyway). Redis not answering within SETTLE_S: the outcome is unknown (logged at
        ERROR), and the caller gets an error. Logged, with which it was."""
        give_up = sent + max(self._settle_s, self._fence_s + FENCE_MARGIN_S)
        while True:
            try:
                found = self._fence_script(keys=[done_key])
            except REDIS_ERRORS as exc:
                if time.monotonic() < give_up:
                    time.sleep(FENCE_RETRY_S)
                    continue
                log.error("append on %s: no answer (%s), nor since (%s) within %g s: whether it was "
                          "stored is unknown; answered as not stored", self.url, cause, exc, self._settle_s)
                return ["unknown"]
            found = found.decode() if isinstance(found, bytes) else found
            if found and found != "fenced":
                log.warning("append on %s: no answer (%s); Redis had stored it (seq %s)",
                            self.url, cause, found.split()[0])
                return ["done", found]
            log.warning("append on %s: no answer (%s); Redis had not run it, and now never will: not stored",
                        self.url, cause)
            return ["fenced"]

    def _pipeline_with_chunks(self, chunks: dict[bytes, bytes]):
        """A pipeline that stores the chunks first. Content-addressed: a chunk stored
        twice, or left over by an append that then failed, does no harm."""
        pipe = self._r.pipeline(transaction=False)
        for digest, data in chunks.items():
            pipe.set(self._p_chunk + digest.hex(), data)
        return pipe

    def _run_append(self, keys: list[str], args: list, chunks: dict[bytes, bytes]):
        """The append script; with chunks, in the same round trip as storing them (one
        connection runs a pipeline in order, so the chunks are stored before the events
        that name them). redis-py's Cluster pipelines refuse scripts: append stores them first there."""
        if not chunks:
            return self._call("append", self._append_script, keys=keys, args=args)
        pipe = self._pipeline_with_chunks(chunks)
        pipe.evalsha(self._append_script.sha, len(keys), *keys, *args)
        replies = self._call("append", pipe.execute, raise_on_error=False)
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                raise errors.StoreUnavailable(f"storing chunks on {self.url} failed: {reply}")
        if isinstance(replies[-1], redis.exceptions.NoScriptError):
            # A restarted or failed-over Redis forgot the script: the chunks are stored,
            # and the Script object loads the script again.
            return self._call("append", self._append_script, keys=keys, args=args)
        if isinstance(replies[-1], Exception):
            raise errors.StoreUnavailable(f"append on {self.url} failed: {replies[-1]}")
        return replies[-1]

    def sync(self) -> None:
        self._wait_durable()

    def _wait_durable(self) -> None:
        """WAIT / WAITAOF as configured. The events are stored on the primary by now, so
        a shortfall is logged, not raised (the contract: raise only if nothing stored)."""
        if not (self._wait_replicas or self._waitaof):
            return
        target = {}
        if self._cluster:
            target = {"target_nodes": self._r.get_node_from_key(self._k_meta)}
        try:
            if self._waitaof:
                try:
                    local, replicas = self._r.execute_command(
                        "WAITAOF", 1, self._wait_replicas, self._wait_timeout_ms, **target)
                except redis.exceptions.ResponseError as exc:
                    if "unknown command" not in str(exc).lower():
                        raise
                    if not self._waitaof_warned:
                        self._waitaof_warned = True
                        log.warning("%s: WAITAOF needs Redis >= 7.2; relying on appendfsync", self.url)
                    self._waitaof = False
                    return self._wait_durable()
                ok = int(local) >= 1 and int(replicas) >= self._wait_replicas
            else:
                ok = int(self._r.execute_command(
                    "WAIT", self._wait_replicas, self._wait_timeout_ms, **target)) >= self._wait_replicas
        except REDIS_ERRORS as exc:
            log.warning("%s: appended, but WAIT/WAITAOF failed: %s", self.url, exc)
            return
        if not ok:
            log.warning("%s: appended, but not confirmed on disk/replicas within %d ms",
                        self.url, self._wait_timeout_ms)

    def read(self, after_seq: int, limit: int = 1000) -> list[Event]:
        return self._events_of(self._read_raw(after_seq, limit)[1])

    def last_seq(self) -> int:
        return self.check_continuity()

    def wait_for_events(self, after_seq: int, timeout: float) -> int:
        """Block in XREAD until an entry after `after_seq` arrives (no polling).

        The block is kept under the socket timeout, so a silent Redis still surfaces as
        an error instead of a hang. Whatever arrives is then read (and verified) by
        read(): this only waits.
        """
        reply = self._call("wait", self._r.xread, {self._k_events: f"{after_seq}-0"}, count=1,
                           block=self._block_ms(timeout))
        entries = self._stream_entries(reply)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else 0

    def wait_and_read(self, after_seq: int, timeout: float, limit: int = 1000) -> list[Event]:
        """One round trip: XREAD BLOCK, and in the same pipeline the marker, read right
        after the entries arrived. The marker is then at least as new as the log the
        entries came from, so a Redis that lost its data is still detected (as read()
        does in its script; a blocking XREAD cannot run inside a script)."""
        known = self._known()
        pipe = self._r.pipeline(transaction=False)
        pipe.xread({self._k_events: f"{after_seq}-0"}, count=limit, block=self._block_ms(timeout))
        pipe.hmget(self._k_meta, "id", "seq")
        reply, (marker, seq) = self._call("wait", pipe.execute)
        self._verify(marker.decode() if marker else "", int(seq or 0), known)
        return self._events_of(self._stream_entries(reply))

    def _block_ms(self, timeout: float) -> int:
        return max(1, int(min(timeout, self._block_limit_s) * 1000))

    def _stream_entries(self, reply) -> list:
        """XREAD's entries of our one stream: RESP2 gives [[key, entries]], RESP3 a map."""
        if not reply:
            return []
        stream = reply[self._k_events.encode()] if isinstance(reply, dict) else reply[0][1]
        # Entries are (id, fields) pairs; RESP3 wraps them in one more list.
        first = stream[0] if stream else None
        if isinstance(first, (list, tuple)) and first and isinstance(first[0], (list, tuple)):
            return first
        return stream

    def _events_of(self, entries: list) -> list[Event]:
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

    def get_chunk(self, digest: bytes) -> bytes:
        data = self._call("get_chunk", self._r.get, self._p_chunk + digest.hex())
        if data is None:
            self.check_continuity()  # a chunk missing because Redis lost everything is EIO
            raise self.chunks_missing([digest])
        return self.verified({digest: data})[digest]

    def get_chunks(self, digests: list[bytes]) -> list[bytes]:
        # One MGET: the keys share the namespace's hash tag, so one Cluster slot.
        datas = self._call("get_chunks", self._r.mget, [self._p_chunk + d.hex() for d in digests])
        if any(data is None for data in datas):
            self.check_continuity()  # missing because Redis lost everything: EIO
            raise self.chunks_missing([d for d, data in zip(digests, datas) if data is None])
        self.verified(dict(zip(digests, datas)))
        return datas

    def scope_seqs(self, scope: str) -> list[int]:
        self.check_continuity()
        return [int(x) for x in self._call("scope_seqs", self._r.lrange, self._scope_key(scope), 0, -1)]

    def put_snapshot(self, seq: int, blob: bytes) -> None:
        self._call("put_snapshot", self._snap_script, keys=[self._k_snaps, f"{self._p_snap}{seq}"],
                   args=[seq, blob, SNAPSHOTS_KEPT, self._p_snap])

    def latest_snapshot(self, max_seq: int | None = None) -> tuple[int, bytes] | None:
        self.check_continuity()
        top = "+inf" if max_seq is None else max_seq
        seqs = self._call("latest_snapshot", self._r.zrevrangebyscore, self._k_snaps, top, "-inf", 0, 1)
        if not seqs:
            return None
        seq = int(seqs[0])
        blob = self._call("latest_snapshot", self._r.get, f"{self._p_snap}{seq}")
        if blob is None:  # pruned between the two calls by another daemon: ask again
            return self.latest_snapshot(max_seq)
        return seq, blob

    def usage(self) -> dict[str, int]:
        """Memory of the Redis node holding this namespace (not just this namespace)."""
        target = {"target_nodes": self._r.get_node_from_key(self._k_meta)} if self._cluster else {}
        info = self._call("usage", self._r.info, "memory", **target)
        used = int(info.get("used_memory", 0))
        limit = int(info.get("maxmemory", 0)) or int(info.get("total_system_memory", 0))
        return {"used_bytes": used, "free_bytes": max(limit - used, 0)}

    def close(self) -> None:
        try:
            self._r.close()
        except REDIS_ERRORS:
            pass
