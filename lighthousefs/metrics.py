"""Prometheus metrics of one daemon, in its own registry.

Names follow lighthousefs_<subsystem>_<name>_<unit>; counters end in _total. The same
text is served on --metrics ADDR:PORT (/metrics, next to /healthz and /readyz) and shown
in .lighthouse/stats.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# FUSE operations take microseconds to milliseconds; the default buckets start at 5 ms.
LATENCY_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                   50e-3, 100e-3, 250e-3, 1.0, 5.0)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


class _ProcessCollector:
    """RSS and CPU of this process, read when scraped (psutil)."""

    def __init__(self):
        self._process = psutil.Process()

    def collect(self):
        memory = self._process.memory_info()
        cpu = self._process.cpu_times()
        yield GaugeMetricFamily("lighthousefs_process_resident_memory_bytes", "Resident set size.",
                                value=memory.rss)
        yield CounterMetricFamily("lighthousefs_process_cpu_seconds", "User and system CPU time.",
                                  value=cpu.user + cpu.system)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.op_seconds = Histogram("lighthousefs_fuse_op_duration_seconds", "Time to answer a FUSE request.",
                                    ["op"], buckets=LATENCY_BUCKETS, registry=r)
        self.op_errors = Counter("lighthousefs_fuse_op_errors_total", "FUSE requests answered with an error.",
                                 ["op", "errno"], registry=r)
        self.cache = Counter("lighthousefs_cache_requests_total", "Chunk reads by tier and result.",
                             ["tier", "result"], registry=r)
        self.cache_bytes = Gauge("lighthousefs_cache_l1_bytes", "Bytes held by the in-process chunk cache.",
                                 registry=r)
        self.breaker_state = Gauge("lighthousefs_breaker_state", "0 closed, 1 half-open, 2 open.",
                                   ["breaker"], registry=r)
        self.breaker_transitions = Counter("lighthousefs_breaker_transitions_total", "Breaker state changes.",
                                           ["breaker", "state"], registry=r)
        self.events_applied = Counter("lighthousefs_journal_events_applied_total", "Events applied to the tree.",
                                      ["origin"], registry=r)
        self.commit_seconds = Histogram("lighthousefs_journal_commit_duration_seconds",
                                        "Time to append one group of events durably.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.commit_events = Histogram("lighthousefs_journal_commit_batch_events", "Events per group commit.",
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512), registry=r)
        self.follower_lag_events = Gauge("lighthousefs_follower_lag_events",
                                         "Events in the store not yet applied here.", registry=r)
        self.follower_lag_seconds = Gauge("lighthousefs_follower_lag_seconds",
                                          "Age of the newest applied event from another producer when applied.",
                                          registry=r)
        self.applied_seq = Gauge("lighthousefs_journal_applied_seq", "Highest event applied.", registry=r)
        self.snapshot_seq = Gauge("lighthousefs_journal_snapshot_seq",
                                  "Event of the newest snapshot this daemon loaded or stored.", registry=r)
        self.start_replayed = Gauge("lighthousefs_journal_start_replayed_events",
                                    "Events the start replayed after the snapshot it loaded.", registry=r)
        self.new_files = Gauge("lighthousefs_new_files_unlogged",
                               "Files created here that are open and not logged yet (logged at their first close).",
                               registry=r)
        self.history_trees = Gauge("lighthousefs_history_cached_trees", "Past trees kept for .history.",
                                   registry=r)
        self.history_tree_inodes = Gauge("lighthousefs_history_cached_tree_inodes",
                                         "Inodes in the past trees kept for .history.", registry=r)
        self.history_inodes = Gauge("lighthousefs_history_inodes",
                                    ".history inode numbers the kernel holds.", registry=r)
        r.register(_ProcessCollector())

    def breaker_changed(self, name: str, old: str, new: str) -> None:
        self.breaker_state.labels(name).set(BREAKER_STATES.get(new, -1))
        self.breaker_transitions.labels(name, new).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, address: str, routes: dict[str, Callable[[], tuple[int, bytes]]] | None = None) -> None:
        """Serve /metrics, and `routes` (path -> () -> (HTTP status, JSON body)), on
        ADDR:PORT from a daemon thread. The routes run in that thread: they may read
        only what is safe there (see health.py)."""
        host, _, port = address.rpartition(":")
        server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _handler(self.registry, routes or {}))
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()


def _handler(registry: CollectorRegistry, routes: dict[str, Callable[[], tuple[int, bytes]]]):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                code, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
            elif path in routes:
                code, body = routes[path]()
                kind = "application/json"
            else:
                code, body, kind = 404, b"not found: try /metrics, " + ", ".join(routes).encode() + b"\n", \
                    "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass   # a scrape every few seconds is not news for the daemon's log

    return Handler
