"""RedisStore against real redis-server processes (standalone and a 3-master Cluster).

The contract tests run against SQLiteStore too: both backends must answer alike.
No mocks, no timing assertions.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
import uuid

import pytest

from lighthousefs import errors
from lighthousefs.domain.chunks import chunk_hash as h
from lighthousefs.domain.events import Draft
from lighthousefs.store import open_store
from lighthousefs.store.redis import RedisStore, StoreDataLost
from lighthousefs.store.sqlite import SQLiteStore
from tests.harness.redis_servers import REDIS_SERVER, RedisServer


def chunks_of(*datas: bytes) -> dict[bytes, bytes]:
    """Chunks named by their hash, as the stores check when they return them."""
    return {h(data): data for data in datas}

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs redis-server"),
]


def draft(path="projects/a/f", type_="write", **payload):
    return Draft(type_, path, payload or {"ino": 1}, "agent-1")


def with_ns(url: str, ns: str | None = None) -> str:
    return f"{url}{'&' if '?' in url else '?'}namespace={ns or uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def server():
    with RedisServer() as srv:
        yield srv


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def opener(request, tmp_path):
    """opener() -> a new store instance; every call of one test shares one log."""
    opened = []
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")
        make = lambda: SQLiteStore(path)  # noqa: E731
    else:
        base = request.getfixturevalue("server" if request.param == "redis" else "cluster").url
        url = with_ns(base)
        make = lambda: RedisStore(url)  # noqa: E731

    def _open():
        opened.append(make())
        return opened[-1]

    yield _open
    for store in opened:
        store.close()


# ---- the Store contract, on every backend --------------------------------------------------

@pytest.mark.expect_log("DATA LOST: .* has no chunk")
def test_empty_log(opener):
    store = opener()
    assert store.last_seq() == 0
    assert store.read(0) == []
    assert store.scope_seqs("projects/a") == []
    assert store.latest_snapshot() is None
    with pytest.raises(errors.ChunkMissing):
        store.get_chunk(b"\x00" * 20)


def test_append_then_read(opener):
    store = opener()
    chunk = chunks_of(b"hello", b"world")
    first = store.append([draft("projects/a/f"), draft("memories/shared/m.md", "mknod", mode=0o644)], chunk)
    second = store.append([draft("agents/x/state.json"), draft("projects/b/g"), draft("projects/a/h")], {})
    appended = first + second
    assert [e.seq for e in appended] == [1, 2, 3, 4, 5]
    assert all(a.time_ns <= b.time_ns for a, b in zip(appended, appended[1:]))
    assert store.read(0) == appended
    assert store.read(2) == appended[2:]
    assert store.read(1, limit=2) == appended[1:3]
    assert store.read(5) == []
    assert store.last_seq() == 5
    assert store.get_chunk(h(b"world")) == b"world"
    assert store.scope_seqs("projects/a") == [1, 5]
    assert store.scope_seqs("memories") == [2]
    assert store.scope_seqs("agents") == [3]
    assert store.scope_seqs("projects/b") == [4]
    assert appended[1].payload == {"mode": 0o644} and appended[1].actor == "agent-1"


def test_bytes_and_nested_payloads_survive(opener):
    store = opener()
    payload = {"name": b"caf\xc3\xa9", "chunks": [b"\x00" * 20, b"\xff" * 20], "size": 2**40, "x": None}
    [event] = store.append([Draft("write", "projects/p/f", payload)], {})
    assert store.read(0) == [event]
    assert store.read(0)[0].payload == payload


def test_chunks_only_append(opener):
    store = opener()
    assert store.append([], chunks_of(b"data")) == []
    assert store.get_chunk(h(b"data")) == b"data"
    assert store.last_seq() == 0


def test_snapshots_keep_the_newest_three(opener):
    store = opener()
    for seq in (10, 20, 30, 40):
        store.put_snapshot(seq, f"tree@{seq}".encode())
    assert store.latest_snapshot() == (40, b"tree@40")
    assert store.latest_snapshot(35) == (30, b"tree@30")
    assert store.latest_snapshot(20) == (20, b"tree@20")
    assert store.latest_snapshot(15) is None  # 10 was pruned
    store.put_snapshot(40, b"again")
    assert store.latest_snapshot() == (40, b"again")


def test_usage(opener):
    usage = opener().usage()
    assert set(usage) == {"used_bytes", "free_bytes"}
    assert usage["used_bytes"] > 0 and usage["free_bytes"] >= 0


def test_a_second_instance_sees_the_same_log(opener):
    a, b = opener(), opener()
    events = a.append([draft(), draft("projects/z/q")], chunks_of(b"shared"))
    assert b.read(0) == events
    assert b.last_seq() == 2
    assert b.get_chunk(h(b"shared")) == b"shared"
    more = b.append([draft()], {})
    assert more[0].seq == 3 and more[0].time_ns >= events[-1].time_ns
    assert a.read(2) == more


def test_concurrent_appends_get_gap_free_unique_seqs(opener):
    stores = [opener(), opener()]
    per_thread, threads_per_store = 25, 3
    results: list[list[int]] = []
    failures = []

    def worker(store, n):
        mine = []
        try:
            for i in range(per_thread):
                batch = [draft(f"projects/p{n}/f{i}-{k}") for k in range(1 + i % 3)]
                got = store.append(batch, {})
                assert [e.seq for e in got] == list(range(got[0].seq, got[0].seq + len(batch)))
                mine += [e.seq for e in got]
        except BaseException as exc:  # reported below: a thread's assert is not a test failure
            failures.append(exc)
        results.append(mine)

    threads = [threading.Thread(target=worker, args=(s, n))
               for n, s in enumerate(stores * threads_per_store)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, len(seqs) + 1))
    log = stores[0].read(0, limit=10_000)
    assert [e.seq for e in log] == seqs
    assert all(a.time_ns <= b.time_ns for a, b in zip(log, log[1:]))
    for n in range(len(threads)):
        assert stores[1].scope_seqs(f"projects/p{n}") == [e.seq for e in log if e.path.startswith(f"projects/p{n}/")]


def test_reads_racing_appends_in_one_instance(opener):
    """A read answered before another thread's append must not look like data loss."""
    store = opener()
    failures = []

    def appender():
        try:
            for i in range(60):
                store.append([draft(f"projects/r/f{i}")], {})
        except BaseException as exc:
            failures.append(exc)

    def reader():
        try:
            for _ in range(120):
                seen = store.last_seq()
                assert [e.seq for e in store.read(0, limit=10_000)][:seen] == list(range(1, seen + 1))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=f) for f in (appender, appender, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert store.last_seq() == 120


# ---- Redis specifics --------------------------------------------------------------------------

def test_open_store_dispatches_and_hides_the_password(tmp_path):
    with RedisServer(password="s3cret") as srv:
        store = open_store(with_ns(srv.url))
        try:
            assert isinstance(store, RedisStore)
            assert "s3cret" not in store.url
        finally:
            store.close()


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_tls():
    with RedisServer(tls=True, password="pw") as srv:
        store = RedisStore(with_ns(srv.url))
        try:
            events = store.append([draft()], chunks_of(b"secret"))
            assert store.read(0) == events and store.get_chunk(h(b"secret")) == b"secret"
        finally:
            store.close()
        with pytest.raises(errors.StoreOpenError):  # plain text to a TLS port
            RedisStore(srv.url.replace("rediss://", "redis://").split("?")[0] + "?timeout=1")


def test_wrong_password_refuses_to_open():
    with RedisServer(password="right") as srv:
        with pytest.raises(errors.StoreOpenError, match="credentials|password|auth"):
            RedisStore(srv.url.replace(":right@", ":wrong@"))
        with pytest.raises(errors.StoreOpenError):
            RedisStore(srv.url.replace(":right@", ""))


def test_refused_port_refuses_to_open():
    srv = RedisServer()  # never started: its port is free
    try:
        with pytest.raises(errors.StoreOpenError, match="cannot open"):
            RedisStore(srv.url)
    finally:
        srv.stop()


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:1/0?namespace=has{brace}",
    "redis://127.0.0.1:1/0?timeout=soon",
    "redis://127.0.0.1:notaport/0",
    "memcached://127.0.0.1:1",
])
def test_malformed_urls_refuse_to_open(url):
    with pytest.raises(errors.StoreOpenError):
        RedisStore(url)


def test_cluster_url_against_a_standalone_server_refuses_to_open(server):
    with pytest.raises(errors.StoreOpenError):
        RedisStore(server.url.replace("redis://", "redis+cluster://").removesuffix("/0"))


def test_namespaces_are_separate(server):
    a, b = RedisStore(with_ns(server.url)), RedisStore(with_ns(server.url))
    a.append([draft()], {})
    assert b.last_seq() == 0 and b.read(0) == []
    assert b.append([draft()], {})[0].seq == 1


def test_cluster_spreads_namespaces_and_keeps_each_on_one_slot(cluster):
    import redis.cluster
    client = redis.cluster.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
    try:
        nodes = set()
        for n in range(12):
            store = RedisStore(with_ns(cluster.url, f"ns{n}"))
            store.append([draft(f"projects/p{n}/f")], {bytes([n]) * 20: b"c"})
            store.put_snapshot(1, b"s")
            keys = client.keys(f"lh:{{ns{n}}}:*", target_nodes=client.PRIMARIES)
            assert len(keys) >= 6  # meta, events, scope, chunk, snaps, snap, done
            assert len({client.keyslot(k) for k in keys}) == 1
            nodes.add(client.get_node_from_key(keys[0]).name)
            store.close()
        assert len(nodes) > 1  # the namespaces did not all land on one master
    finally:
        client.close()


def test_clock_behind_another_daemon_still_gives_non_decreasing_times(server, skewed_clock):
    url = with_ns(server.url)
    ahead, behind = RedisStore(url), RedisStore(url)
    skewed_clock[threading.get_ident()] = 3600 * 10**9  # as if this clock ran an hour ahead
    [early] = ahead.append([draft()], {})
    skewed_clock.clear()
    [late] = behind.append([draft()], {})
    assert late.seq == early.seq + 1 and late.time_ns >= early.time_ns
    assert behind.read(0) == [early, late]


def test_a_retried_append_is_applied_once(server):
    """The append script with a token it already ran returns the first result."""
    store = RedisStore(with_ns(server.url))
    keys = [store._keys.meta, store._keys.events, store._keys.done("tok"), store._keys.scope("projects/a")]
    args = [store.marker, 0, b"\x96\x01\x00\xa0\xa5write\xa1x\x80"]
    first = store._scripts.append(keys=keys, args=args)
    again = store._scripts.append(keys=keys, args=args)
    assert (first[0], again[0]) == (b"ok", b"done") and first[1] == again[1]
    assert store.last_seq() == 1 and len(store.read(0)) == 1


def test_append_with_chunks_after_redis_forgot_the_script(server):
    """Chunks and the script share one round trip; a Redis that lost its script cache
    (restart, failover) gets the script loaded again, and nothing is appended twice."""
    store = RedisStore(with_ns(server.url))
    store.append([draft()], chunks_of(b"before"))
    server.client().script_flush()
    [event] = store.append([draft()], chunks_of(b"after"))
    assert event.seq == 2 and [e.seq for e in store.read(0)] == [1, 2]
    assert store.get_chunk(h(b"after")) == b"after"
    store.close()


# ---- failures -----------------------------------------------------------------------------------

def test_killed_redis_raises_store_unavailable_then_recovers(own_server):
    store = RedisStore(with_ns(own_server.url))
    events = store.append([draft()], chunks_of(b"kept"))
    own_server.kill()
    for call in (lambda: store.append([draft()], {}), lambda: store.read(0), store.last_seq,
                 lambda: store.get_chunk(h(b"kept")), lambda: store.scope_seqs("projects/a"),
                 lambda: store.put_snapshot(1, b"x"), store.latest_snapshot, store.usage):
        with pytest.raises(errors.StoreUnavailable, match="ConnectionError|refused|Connection"):
            call()
    own_server.restart(keep_data=True)
    assert store.read(0) == events  # AOF kept it: same data, no false alarm
    assert store.append([draft()], {})[0].seq == 2
    assert store.get_chunk(h(b"kept")) == b"kept"


@pytest.mark.expect_log("append on .*: no answer")
def test_frozen_redis_times_out_instead_of_hanging(own_server):
    store = RedisStore(with_ns(own_server.url) + "&timeout=0.3")
    store.append([draft()], {})
    os.kill(own_server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(errors.StoreUnavailable, match="Timeout"):
            store.read(0)
        with pytest.raises(errors.StoreUnavailable, match="Timeout"):
            store.append([draft()], {})
    finally:
        os.kill(own_server.proc.pid, signal.SIGCONT)


@pytest.mark.expect_log("Redis lost its data")
def test_redis_restarted_empty_is_detected_loudly(own_server, caplog):
    store = RedisStore(with_ns(own_server.url))
    store.append([draft(), draft()], {})
    own_server.restart(keep_data=False)
    with caplog.at_level(logging.ERROR, logger="lighthousefs.store.redis"):
        for call in (store.last_seq, lambda: store.read(0), store.check_continuity,
                     lambda: store.append([draft()], {}), lambda: store.get_chunk(b"\x00" * 20)):
            with pytest.raises(StoreDataLost, match="Redis lost its data"):
                call()
    assert len([r for r in caplog.records if "lost its data" in r.getMessage()]) == 1
    # A daemon starting now has seen nothing: it opens the (new, empty) log.
    assert RedisStore(store.url).last_seq() == 0


@pytest.mark.expect_log("Redis lost its data")
def test_following_a_redis_that_lost_its_data_is_refused(own_server):
    """Redis comes back empty and another daemon starts a new log that grows past what
    this one saw: the follower's read must not hand over the new log's events."""
    store = RedisStore(with_ns(own_server.url))
    store.append([draft(), draft()], {})
    own_server.restart(keep_data=False)
    RedisStore(store.url).append([draft("projects/x/y") for _ in range(5)], {})
    with pytest.raises(StoreDataLost, match="Redis lost its data"):
        store.wait_and_read(2, 0.5)


@pytest.mark.expect_log("Redis lost its data")
def test_marker_replaced_by_another_daemon_is_detected(own_server):
    url = with_ns(own_server.url)
    old = RedisStore(url)
    old.append([draft()], {})
    own_server.client().flushall()
    newcomer = RedisStore(url)
    newcomer.append([draft(), draft(), draft()], {})  # the seq is beyond what `old` saw
    with pytest.raises(errors.StoreUnavailable, match="lost its data"):
        old.read(0)


@pytest.mark.expect_log("Redis lost its data")
def test_older_aof_is_detected(own_server):
    """Redis comes back from an older copy of its data: the seq went backwards."""
    store = RedisStore(with_ns(own_server.url))
    store.append([draft()] * 3, {})
    own_server.shutdown()
    saved = own_server.dir + ".saved"
    shutil.copytree(own_server.dir, saved)
    own_server.start()
    store.append([draft()] * 2, {})
    assert store.last_seq() == 5
    own_server.kill()
    shutil.rmtree(own_server.dir)
    shutil.copytree(saved, own_server.dir)
    shutil.rmtree(saved)
    own_server.start()
    with pytest.raises(errors.StoreUnavailable, match="last seq is 3, but seq 5 was seen"):
        store.read(0)


def test_events_without_marker_refuse_to_open(own_server):
    url = with_ns(own_server.url, "partial")
    RedisStore(url).append([draft()], {})
    own_server.client().delete("lh:{partial}:meta")
    with pytest.raises(errors.StoreOpenError, match="no marker"):
        RedisStore(url)


def test_expected_marker(own_server):
    url = with_ns(own_server.url)
    marker = RedisStore(url).marker
    assert RedisStore(url, expect_marker=marker).marker == marker
    own_server.client().flushall()
    with pytest.raises(errors.StoreOpenError, match="expected"):
        RedisStore(url, expect_marker=marker)


def test_wipe_before_anything_was_seen_is_adopted(own_server):
    store = RedisStore(with_ns(own_server.url))
    own_server.client().flushall()
    assert store.last_seq() == 0
    assert store.append([draft()], {})[0].seq == 1


# ---- end to end: two real mounts sharing one Redis namespace -------------------------------------

@pytest.mark.mount
def test_two_mounts_share_one_redis(mounter, server):
    from tests.harness.mounts import eventually

    url = with_ns(server.url)
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "demo").mkdir()
    (a / "projects" / "demo" / "notes.md").write_text("from a\n")
    assert eventually(lambda: (b / "projects" / "demo" / "notes.md").read_text() == "from a\n")
    (b / "projects" / "demo" / "notes.md").write_text("from b\n")
    assert eventually(lambda: (a / "projects" / "demo" / "notes.md").read_text() == "from b\n")


@pytest.mark.mount
def test_mount_refuses_an_unreachable_redis(tmp_path):
    from tests.harness.mounts import mount

    srv = RedisServer()  # never started
    try:
        with pytest.raises(RuntimeError, match="cannot open the Redis store"):
            mount(tmp_path / "mnt", srv.url, log=tmp_path / "mnt.log")
    finally:
        srv.stop()


def test_mount_of_a_silent_redis_gives_up_instead_of_hanging(tmp_path, monkeypatch, capsys, own_server):
    """A Redis that accepts and never answers (frozen): `lighthouse mount` stops waiting
    for the daemon after its ready timeout, stops the daemon, and says so."""
    import psutil
    from tests.harness.mounts import is_mounted, unmount_quietly

    from lighthousefs import cli

    monkeypatch.setattr(cli, "READY_TIMEOUT_S", 2.0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.kill(own_server.proc.pid, signal.SIGSTOP)
    try:
        code = cli.main(["mount", str(mnt), "--store", with_ns(own_server.url) + "&timeout=60",
                         "--log", str(tmp_path / "mnt.log")])
    finally:
        os.kill(own_server.proc.pid, signal.SIGCONT)
        unmount_quietly(mnt)   # only if the daemon got that far after all
    assert code != 0 and "not ready within 2 s" in capsys.readouterr().err
    assert not is_mounted(mnt)
    daemons = [p for p in psutil.process_iter(["cmdline"]) if str(mnt) in (p.info["cmdline"] or [])]
    assert daemons == [], "the daemon was left running"


def test_wait_for_events_names_a_newer_event_or_times_out(opener):
    store = opener()
    store.append([draft(f"projects/a/f{i}") for i in range(3)], {})
    assert 1 < store.wait_for_events(1, 0.5) <= 3
    assert store.wait_for_events(3, 0.05) == 0


@pytest.mark.expect_log("DATA LOST: .* has no chunk")
def test_get_chunks_returns_them_in_order_or_names_the_missing(opener):
    store = opener()
    chunks = chunks_of(*(b"piece %d" % i for i in range(5)))
    store.append([draft()], chunks)
    wanted = [h(b"piece 3"), h(b"piece 0"), h(b"piece 3")]
    assert store.get_chunks(wanted) == [b"piece 3", b"piece 0", b"piece 3"]
    with pytest.raises(errors.ChunkMissing, match=(b"\x09" * 20).hex()) as missing:
        store.get_chunks([h(b"piece 1"), b"\x09" * 20])
    assert missing.value.digests == [b"\x09" * 20]
    many = chunks_of(*(b"%d" % i for i in range(1200)))   # more than one query's worth
    store.append([draft()], many)
    assert store.get_chunks(list(many)) == list(many.values())


@pytest.mark.expect_log("DATA LOST: .* has no chunk")
def test_a_missing_chunk_is_data_loss_eio_logged_once(opener, caplog):
    """An event names the chunk but the store has not got it: the file exists and its
    content is gone. EIO (not ENOENT: that would say the file is not there), not a
    store failure (the store answered), and one ERROR naming the chunk and the store
    however often it is asked for."""
    store = opener()
    store.append([draft()], {b"\x01" * 20: b"kept"})
    lost, also_lost = b"\x0a" * 20, b"\x0b" * 20
    with caplog.at_level(logging.ERROR, logger="lighthousefs.store.base"):
        for call in (lambda: store.get_chunk(lost), lambda: store.get_chunks([b"\x01" * 20, lost]),
                     lambda: store.get_chunks([lost, also_lost, lost])):
            with pytest.raises(errors.ChunkMissing) as exc:
                call()
            assert exc.value.errno == errno.EIO and exc.value.where == store.url
            assert not isinstance(exc.value, (errors.NotFound, errors.StoreUnavailable))
    errors_logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(lost.hex() in r.getMessage(), also_lost.hex() in r.getMessage()) for r in errors_logged] == [
        (True, False), (False, True)]
    assert all(store.url in r.getMessage() and not r.exc_info for r in errors_logged)


def test_wait_and_read_returns_what_follows_or_nothing(opener):
    store = opener()
    store.append([draft(f"projects/a/f{i}") for i in range(3)], {})
    assert store.wait_and_read(1, 0.5) == store.read(1) and [e.seq for e in store.read(1)] == [2, 3]
    assert [e.seq for e in store.wait_and_read(0, 0.5, limit=1)] == [1]
    assert store.wait_and_read(3, 0.05) == []


def test_wait_and_read_is_woken_by_another_producer(opener):
    waiter, producer = opener(), opener()
    waiter.append([draft()], {})
    result = []
    thread = threading.Thread(target=lambda: result.extend(waiter.wait_and_read(1, 10.0)))
    thread.start()
    time.sleep(0.2)
    [event] = producer.append([draft("projects/b/g")], {})
    thread.join(timeout=15)
    assert result == [event]


# ---- the store assigns times: an append never fails because others append -------------------

@pytest.fixture
def skewed_clock(monkeypatch):
    """time.time_ns as seen by each thread: the threads named in the returned dict run
    that many ns ahead (a daemon whose clock is wrong), the others see the real time."""
    real, skew = time.time_ns, {}
    monkeypatch.setattr(time, "time_ns", lambda: real() + skew.get(threading.get_ident(), 0))
    return skew


def test_an_append_never_fails_because_others_append_in_between(server, skewed_clock):
    """Before each of b's tries, a (its clock an hour ahead) appends: b's append
    still succeeds at once, and the log's times never go back."""
    url = with_ns(server.url)
    a, b = RedisStore(url), RedisStore(url)
    tried = b._run_append

    def another_append_first(*args, **kwargs):
        def append_ahead():
            skewed_clock[threading.get_ident()] = 3600 * 10**9
            a.append([draft("projects/o/f")], {})
        helper = threading.Thread(target=append_ahead)
        helper.start()
        helper.join()
        return tried(*args, **kwargs)

    b._run_append = another_append_first
    for _ in range(3):
        [event] = b.append([draft()], {})
    log = b.read(0)
    assert [e.seq for e in log] == list(range(1, 7)) and log[-1] == event
    assert all(x.time_ns <= y.time_ns for x, y in zip(log, log[1:]))
    a.close()
    b.close()


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_concurrent_appends_with_skewed_clocks_never_fail(request, where, skewed_clock):
    url = with_ns(request.getfixturevalue("server" if where == "redis" else "cluster").url)
    stores = [RedisStore(url), RedisStore(url)]
    failures, seqs = [], []

    def worker(store, ahead_ns):
        skewed_clock[threading.get_ident()] = ahead_ns
        try:
            for i in range(30):
                got = store.append([draft(f"projects/s/f{i}-{k}") for k in range(1 + i % 2)], {})
                seqs.extend(e.seq for e in got)
        except BaseException as exc:  # reported below: a thread's assert is not a test failure
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(store, skew))
               for store, skew in [(stores[0], 3600 * 10**9), (stores[1], 0)] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    log = stores[1].read(0, limit=10_000)
    assert [e.seq for e in log] == sorted(seqs)
    assert all(x.time_ns <= y.time_ns for x, y in zip(log, log[1:]))
    for store in stores:
        store.close()


# ---- an append whose answer is lost is settled: an error always means "not stored" ---------

def _answer_lost_after(run):
    """A _run_append that runs `run` (or not) and then loses Redis's answer."""
    import redis

    def lose(*args, **kwargs):
        if run is not None:
            run(*args, **kwargs)
        try:
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        except redis.exceptions.TimeoutError as exc:
            raise errors.StoreUnavailable(f"append failed: {exc}") from exc
    return lose


@pytest.mark.expect_log("no answer .*Redis had stored it")
def test_an_append_whose_answer_was_lost_after_it_ran_is_reported_stored(server, caplog):
    store = RedisStore(with_ns(server.url))
    real = store._run_append
    store._run_append = _answer_lost_after(real)
    [event] = store.append([draft()], {h(b"kept"): b"kept"})
    assert store.read(0) == [event] and store.get_chunk(h(b"kept")) == b"kept"
    assert "Redis had stored it" in caplog.text
    store.close()


@pytest.mark.expect_log("no answer .*Redis had not run it")
def test_an_append_whose_answer_was_lost_before_it_ran_never_runs(server, caplog):
    store = RedisStore(with_ns(server.url))
    sent = []
    store._run_append = _answer_lost_after(lambda keys, args, chunks: sent.append((keys, args)))
    with pytest.raises(errors.StoreUnavailable, match="not stored"):
        store.append([draft()], {})
    assert "had not run it, and now never will" in caplog.text
    # The script arrives after all (it was stuck in a frozen Redis): refused, nothing written.
    [(keys, args)] = sent
    assert store._scripts.append(keys=keys, args=args) == [b"fenced"]
    assert store.read(0) == [] and store.last_seq() == 0
    store.close()


@pytest.mark.expect_log("append on .*: no answer")
def test_an_append_refused_by_a_frozen_redis_is_never_stored_later(own_server, caplog):
    """Redis is frozen through the whole append and its deadline: the append fails, and
    when Redis resumes and runs the script at last, it refuses it."""
    store = RedisStore(with_ns(own_server.url) + "&timeout=0.5&settle_timeout=3")
    [first] = store.append([draft()], {})
    os.kill(own_server.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(errors.StoreUnavailable, match="not stored"):
            store.append([draft("projects/a/late")], {h(b"x"): b"x"})
    finally:
        os.kill(own_server.proc.pid, signal.SIGCONT)
    time.sleep(0.5)   # the script it had received has run (or been refused) by now
    assert store.read(0) == [first] and store.last_seq() == 1
    assert "not stored" in caplog.text
    store.close()


@pytest.mark.expect_log("append on .*: no answer")
def test_appends_through_a_short_freeze_are_stored_exactly_when_reported(own_server):
    """Redis freezes for 1.5 s while appends are in flight: each append either returns
    its events, which are in the log, or raises, and its event is not in the log."""
    store = RedisStore(with_ns(own_server.url) + "&timeout=0.5")
    store.append([draft()], {})
    reported: dict[str, bool] = {}

    def appender(n):
        for i in range(6):
            path = f"projects/a/t{n}-{i}"
            try:
                store.append([draft(path)], {})
                reported[path] = True
            except errors.StoreUnavailable:
                reported[path] = False
            time.sleep(0.1)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    os.kill(own_server.proc.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(own_server.proc.pid, signal.SIGCONT)
    for t in threads:
        t.join()
    time.sleep(0.5)
    stored = {e.path for e in store.read(0, limit=10_000)}
    assert {p for p, ok in reported.items() if ok} == stored - {"projects/a/f"}
    store.close()


def test_a_retry_refused_at_connect_does_not_hide_a_first_try_that_may_have_run():
    """Redis killed mid-append: the first try's answer is lost (it may have run), and
    redis-py's one retry is refused at connect. That append is settled (asked about),
    never answered "not stored" at once."""
    import redis
    from redis.backoff import NoBackoff

    from lighthousefs.store.redis.answers import RecordingRetry as _RecordingRetry
    from lighthousefs.store.redis.answers import answer_lost as _answer_lost

    retry = _RecordingRetry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    tries = iter([redis.exceptions.ConnectionError("Connection closed by server."),
                  redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")])

    def do():
        raise next(tries)
    with pytest.raises(redis.exceptions.ConnectionError, match="connecting to") as raised:
        retry.call_with_retry(do, lambda error: None)
    assert _answer_lost(raised.value)
    # Every try refused at connect: never reached, nothing can have run.
    refused = iter([redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")] * 2)
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        retry.call_with_retry(lambda: (_ for _ in ()).throw(next(refused)), lambda error: None)
    assert not _answer_lost(raised.value)
    # A Redis still loading its data answers LOADING (redis-py files it as a
    # ConnectionError): an answer, so nothing ran and nothing needs settling.
    loading = iter([redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")] * 2)
    with pytest.raises(redis.exceptions.BusyLoadingError) as raised:
        retry.call_with_retry(lambda: (_ for _ in ()).throw(next(loading)), lambda error: None)
    assert not _answer_lost(raised.value)


def test_appends_go_on_after_redis_clock_jumps_ahead_of_the_estimate(server):
    """A clock step or a failover puts Redis's clock ahead of what the store learnt: its
    deadlines are then already past when Redis runs the script. The first refusal
    teaches the store Redis's clock, and the append goes through."""
    store = RedisStore(with_ns(server.url))
    try:
        store.append([draft()], {})
        store._clock.learn(store._clock.now_ms() - 10_000)   # as if Redis's clock had stepped 10 s ahead
        for i in range(5):
            store.append([draft(f"projects/a/after{i}")], {})
        assert store.last_seq() == 6
    finally:
        store.close()
