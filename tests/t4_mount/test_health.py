"""Health that tells the truth, on real mounts: `.lighthouse/health` and /readyz stop
saying ok while writes fail (a killed redis-server) and recover after its restart;
/healthz stays 200 (the daemon's loop answers); an embedded SQLite store is ok."""
from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest
from test_mount_redis import MKDIR, run

from tests.harness.mounts import eventually, lighthouse

pytestmark = [pytest.mark.mount]


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def get(address: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def health(m) -> dict:
    return json.loads((m / ".lighthouse" / "health").read_text())


def test_sqlite_mount_is_ok_and_ready(mounter):
    address = free_address()
    m = mounter("a", "--metrics", address)
    (m / "projects" / "p").mkdir()
    h = health(m)
    assert (h["status"], h["reason"], h["breaker"], h["failsafe"], h["store_answers"]) == \
        ("ok", None, "closed", None, True)
    assert get(address, "/healthz")[0] == 200
    eventually(lambda: get(address, "/readyz")[1]["store_seq"] == h["applied_seq"])
    code, report = get(address, "/readyz")
    assert code == 200 and report["status"] == "ok" and report["lag_events"] == 0
    assert urllib.request.urlopen(f"http://{address}/metrics", timeout=10).status == 200


@pytest.mark.expect_log("following the store failed; retrying", "circuit opens after", "store circuit \\S+ -> \\S+", "snapshot at \\d+ not stored", "following the store again", "store housekeeping failed")
@pytest.mark.redis
def test_a_dead_redis_is_not_ok_until_it_is_back(mounter, own_server):
    address = free_address()
    m = mounter("a", "--metrics", address, store=f"{own_server.url}?namespace=t{uuid.uuid4().hex[:10]}")
    project = m / "projects" / "p"
    project.mkdir()
    assert health(m)["status"] == "ok"
    assert get(address, "/readyz")[0] == 200

    own_server.kill()
    assert run(MKDIR, project / "d").returncode != 0   # writes fail ...
    failing = eventually(lambda: (h := health(m))["status"] != "ok" and h, timeout=30, interval=0.2)
    assert failing["status"] == "failing" and failing["reason"]   # ... and health says so, with why
    code, report = get(address, "/readyz")
    assert code == 503 and report["status"] == "failing" and report["reason"]
    assert get(address, "/healthz")[0] == 200   # the daemon itself is alive

    own_server.restart(keep_data=True)
    eventually(lambda: run(MKDIR, project / "e").returncode == 0, timeout=30, interval=0.2)
    eventually(lambda: health(m)["status"] == "ok", timeout=30, interval=0.2)
    eventually(lambda: get(address, "/readyz")[0] == 200, timeout=30, interval=0.2)
    assert get(address, "/healthz")[0] == 200


@pytest.mark.expect_log("following the store failed; retrying", "circuit opens after", "store circuit \\S+ -> \\S+", "snapshot at \\d+ not stored", "Redis lost its data", "THE STORE LOST DATA THIS DAEMON HAD SEEN", "store housekeeping failed")
@pytest.mark.redis
def test_a_redis_that_lost_data_is_failing_for_good(mounter, own_server):
    m = mounter("a", store=f"{own_server.url}?namespace=t{uuid.uuid4().hex[:10]}")
    (m / "projects" / "p").mkdir()
    own_server.restart(keep_data=False)
    failing = eventually(lambda: (h := health(m))["failsafe"] and h, timeout=30, interval=0.2)
    assert failing["status"] == "failing" and "lost data" in failing["reason"]


@pytest.mark.redis
@pytest.mark.expect_log(r"circuit|housekeeping failed|following the store")
def test_a_redis_that_answers_reads_but_refuses_writes_is_failing(mounter, own_server):
    """Before: once the heartbeat's read had closed the circuit, every mkdir failed with
    EIO while /readyz said 200 "ok": reads answered, so the breaker, reachable and the
    monitor's read probe all did."""
    address = free_address()
    m = mounter("a", "--metrics", address, store=f"{own_server.url}?namespace=t{uuid.uuid4().hex[:10]}")
    project = m / "projects" / "p"
    project.mkdir()
    assert health(m)["status"] == "ok"
    client = own_server.client()
    client.config_set("min-replicas-to-write", 1)   # reads answer, every write is refused
    try:
        for i in range(8):   # a burst that opens the circuit
            assert run(MKDIR, project / f"burst{i}").returncode != 0
        eventually(lambda: health(m)["breaker"] == "closed", timeout=30, interval=0.2)   # a read closed it
        for i in range(3):
            assert run(MKDIR, project / f"later{i}").returncode != 0
            time.sleep(1.5)   # the heartbeat's reads answered meanwhile (not a timing assertion)
            h = health(m)
            assert h["status"] == "failing" and "write" in h["reason"], h
            code, report = get(address, "/readyz")
            assert code == 503 and report["status"] == "failing", report
        # Nothing writes now: the monitor's own write probe keeps finding out.
        time.sleep(3)
        assert health(m)["status"] == "failing"
    finally:
        client.config_set("min-replicas-to-write", 0)
    # The store takes writes again: the probe sees it without any write of ours.
    eventually(lambda: health(m)["status"] == "ok", timeout=30, interval=0.2)
    eventually(lambda: get(address, "/readyz")[0] == 200, timeout=30, interval=0.2)
    assert run(MKDIR, project / "after").returncode == 0


@pytest.mark.redis
@pytest.mark.expect_log(r"following the store|housekeeping|circuit")
def test_lighthouse_status_exits_non_zero_unless_ok(mounter, own_server):
    """Before: `lighthouse status` exited 0 whatever the status (the container's health
    check relies on it when LIGHTHOUSE_METRICS is unset)."""
    m = mounter("a", store=f"{own_server.url}?namespace=t{uuid.uuid4().hex[:10]}")
    (m / "projects" / "p").mkdir()
    result = lighthouse("status", str(m.path), check=False)
    assert result.returncode == 0 and '"status": "ok"' in result.stdout
    own_server.kill()
    eventually(lambda: health(m)["status"] == "failing", timeout=30, interval=0.2)
    result = lighthouse("status", str(m.path), check=False)
    assert result.returncode == 4 and '"status": "failing"' in result.stdout   # the report still shows why
    own_server.restart(keep_data=True)
    eventually(lambda: lighthouse("status", str(m.path), check=False).returncode == 0, timeout=30, interval=0.2)


def test_lighthouse_status_exit_codes(monkeypatch, tmp_path, capsys):
    from lighthousefs import cli
    (tmp_path / ".lighthouse").mkdir()
    (tmp_path / ".lighthouse" / "stats").write_text("x 1\n")
    for status, code in (("ok", 0), ("degraded", 3), ("failing", 4)):
        (tmp_path / ".lighthouse" / "health").write_text(json.dumps({"status": status}))
        assert cli.main(["status", str(tmp_path)]) == code
    assert cli.main(["status", str(tmp_path / "nothing")]) == 1   # the mount does not answer
    capsys.readouterr()


class _Store:
    remote, full, url = True, None, "redis://x"


class _Breaker:
    state = "closed"


class _Tree:
    applied_seq = 10


class _Guarded:
    write_failure = None


class _Journal:
    store, breaker, tree, failsafe, guarded = _Store(), _Breaker(), _Tree(), None, _Guarded()

    def store_reachable(self):
        return True


def test_a_mount_far_behind_its_store_is_degraded(monkeypatch):
    """Writes would succeed, but this mount has not caught up with the store for long."""
    from lighthousefs.engine import health as health_module
    monitor = health_module.Monitor(_Journal())
    assert monitor.current.ok
    monitor._probes.append((500, time.monotonic()))
    assert monitor.report().status == "ok"   # just now behind: the follower is on it
    monitor._caught_up_at -= health_module.MAX_LAG_S + 1
    report = monitor.report()
    assert (report.status, report.lag_events) == ("degraded", 490) and "behind" in report.reason
    code, body = health_module.http_routes(monitor)["/readyz"]()
    assert code == 503 and json.loads(body)["status"] == "degraded"
    assert health_module.http_routes(monitor)["/healthz"]()[0] == 200
    monitor.current = dataclasses.replace(monitor.current, published=monitor.current.published - 3600)
    assert health_module.http_routes(monitor)["/healthz"]()[0] == 503   # the loop stopped reporting


def test_a_mount_that_keeps_up_with_a_steady_stream_is_ok():
    """Others write all the time: the newest probe is never applied at once, the one
    before it is. That is no lag to speak of."""
    from lighthousefs.engine import health as health_module
    journal = _Journal()
    journal.tree = _Tree()
    monitor = health_module.Monitor(journal)
    start = time.monotonic() - 100
    monitor._caught_up_at = start   # mounted 100 s ago
    for i in range(100):   # a probe a second for 100 s, each 5 events ahead of the tree
        monitor._probes.append((journal.tree.applied_seq + 5, start + i))
        journal.tree.applied_seq += 5
    monitor._probes.append((journal.tree.applied_seq + 5, time.monotonic()))
    report = monitor.report()
    assert (report.status, report.lag_events) == ("ok", 5) and report.lag_s < health_module.MAX_LAG_S
