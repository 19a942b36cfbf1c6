"""Real redis-server processes for the tests and the benchmarks: loopback ports,
temporary directories.

    with RedisServer() as srv:          # standalone, AOF on (appendfsync always)
        srv.url                         # redis://127.0.0.1:<port>/0
        srv.kill()                      # SIGKILL, like a crash
        srv.restart(keep_data=False)    # same port, empty data dir

    with RedisCluster3() as cluster:    # 3 masters, no replicas, all slots covered
        cluster.url                     # redis+cluster://127.0.0.1:<port>
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis

from . import mounts

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
START_TIMEOUT_S = 20.0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A free loopback port; for Cluster also port + 10000 (its bus), so at most 55535."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(1000):
        port = random.randint(20000, 30000)  # below the kernel's ephemeral range
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One redis-server; stopped (and its directory removed) by stop() or `with`."""

    def __init__(self, port: int | None = None, password: str | None = None,
                 appendonly: bool = True, cluster: bool = False, dir: str | None = None,
                 tls: bool = False, appendfsync: str = "always", argv_prefix: tuple = (),
                 own_session: bool = False):
        # appendfsync "always" (the tests'): a SIGKILL loses nothing acknowledged, so
        # keep_data restarts are exact; the benchmarks measure with Redis's default.
        # argv_prefix: e.g. ("taskset", "-c", "1") to pin it; own_session: a Ctrl-C in
        # the terminal does not stop it before its owner's cleanup does.
        self._pick_port = port is None  # a port we chose may be taken meanwhile: choose again
        self.port = port or free_port(cluster)
        self.password = password
        self.appendonly = appendonly
        self.cluster = cluster
        self.tls = tls
        self._own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="lh-redis-")
        self.appendfsync = appendfsync
        self.argv_prefix = tuple(argv_prefix)
        self.own_session = own_session
        self.proc: subprocess.Popen | None = None

    @property
    def cert(self) -> str:
        return os.path.join(self.dir, "cert.pem")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5) -> redis.Redis:
        tls = dict(ssl=True, ssl_ca_certs=self.cert) if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=timeout, socket_connect_timeout=timeout, **tls)

    def _make_cert(self) -> None:
        """A self-signed certificate for 127.0.0.1, also its own CA."""
        if not os.path.exists(self.cert):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-keyout", os.path.join(self.dir, "key.pem"), "-out", self.cert,
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True, timeout=60)

    def start(self) -> "RedisServer":
        ports = ["--port", str(self.port)]
        if self.tls:
            self._make_cert()
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.cert,
                     "--tls-key-file", os.path.join(self.dir, "key.pem"), "--tls-ca-cert-file", self.cert,
                     "--tls-auth-clients", "no"]
        args = [*self.argv_prefix, REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync, "--logfile", os.path.join(self.dir, "redis.log"),
                "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "5000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=self.own_session)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                if self._pick_port and "already in use" in self.log_tail() and time.monotonic() < deadline:
                    os.unlink(os.path.join(self.dir, "redis.log"))
                    self.port = free_port(self.cluster)
                    return self.start()
                raise RuntimeError(f"redis-server on port {self.port} exited: {self.log_tail()}")
            try:
                with self.client(timeout=0.5) as c:
                    if c.ping():
                        return self
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass  # not up yet, loading, or someone else's socket: poll() tells
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return "".join(f.readlines()[-5:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what appendfsync already wrote."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def shutdown(self) -> None:
        """SIGTERM: Redis's own orderly shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, keep_data: bool = True) -> None:
        """Stop (if running) and start again on the same port, optionally emptied."""
        self.shutdown()
        self._pick_port = False  # clients point at this port: it must stay
        if not keep_data:
            for name in os.listdir(self.dir):
                if name not in ("redis.log", "cert.pem", "key.pem") and not (self.cluster and name == "nodes.conf"):
                    path = os.path.join(self.dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        self.start()

    def stop(self) -> None:
        """The end of this server: the mounts on it are unmounted first (else their daemons
        would log the store gone at unmount, and a test's fixtures stop in either order)."""
        mounts.unmount_those_on(f"127.0.0.1:{self.port}")
        self.shutdown()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisCluster3:
    """Three cluster-enabled masters joined with `redis-cli --cluster create`."""

    def __init__(self):
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> "RedisCluster3":
        try:
            for _ in range(3):
                self.nodes.append(RedisServer(cluster=True).start())
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run([REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            states = []
            for n in self.nodes:
                with n.client() as c:
                    states.append(c.execute_command("CLUSTER", "INFO"))
            if all(b"cluster_state:ok" in (s if isinstance(s, bytes) else str(s).encode())
                   for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not become ok: {states}")
            time.sleep(0.05)

    def stop(self) -> None:
        for n in self.nodes:
            mounts.unmount_those_on(f"127.0.0.1:{n.port}")
        for n in self.nodes:
            n.stop()
        self.nodes = []

    def __enter__(self) -> "RedisCluster3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
