"""A Redis store's URL: which server(s), and our options.

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
                         it ran (default 20; see RedisStore._settle)
"""
from __future__ import annotations

import dataclasses
import urllib.parse

from .keys import NAMESPACE_RE

# How long an append whose answer was lost keeps asking Redis whether it ran, by default
# (URL: settle_timeout): only an answer tells (it may have run just before Redis froze or
# died). Past this, EIO, and the outcome is logged as unknown.
SETTLE_S = 20.0
OUR_PARAMS = ("namespace", "timeout", "connect_timeout", "wait_replicas", "waitaof", "wait_timeout_ms",
              "settle_timeout")
# redis-py's own URL parameters that we pass on: TLS and connection tuning.
REDIS_PY_PARAMS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                   "ssl_check_hostname", "ssl_min_version", "client_name", "health_check_interval",
                   "socket_keepalive", "max_connections")


@dataclasses.dataclass(frozen=True)
class Options:
    redis_url: str          # for redis-py: our parameters taken out
    cluster: bool
    namespace: str
    timeout: float
    connect_timeout: float
    wait_replicas: int
    waitaof: bool
    wait_timeout_ms: int
    settle_timeout: float


def parse(url: str) -> Options:
    """The URL's server and options. ValueError on a malformed URL or option."""
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
    namespace = ours.get("namespace", "default")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} must match {NAMESPACE_RE.pattern}")
    timeout = float(ours.get("timeout", 2.0))
    return Options(
        redis_url=urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, rest, "")),
        cluster=cluster,
        namespace=namespace,
        timeout=timeout,
        connect_timeout=float(ours.get("connect_timeout", timeout)),
        wait_replicas=int(ours.get("wait_replicas", 0)),
        waitaof=ours.get("waitaof", "0") not in ("0", "", "false", "no"),
        wait_timeout_ms=int(ours.get("wait_timeout_ms", 1000)),
        settle_timeout=float(ours.get("settle_timeout", SETTLE_S)))

