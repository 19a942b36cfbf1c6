"""The store's password never shows: not through the mount (.lighthouse/health), not in
any lighthousefs process's argv, not in a log line; on a real password-protected Redis."""
from __future__ import annotations

import json
import os
import uuid

import psutil
import pytest
from test_mount_redis import MKDIR, run

from tests.harness.mounts import eventually, lighthouse
from tests.harness.redis_servers import RedisServer

PASSWORD = "s3cret-" + uuid.uuid4().hex[:12]


@pytest.fixture
def locked_server():
    """A redis-server that requires PASSWORD."""
    with RedisServer(password=PASSWORD) as srv:
        yield srv


def namespaced(url: str) -> str:
    return f"{url}?namespace=t{uuid.uuid4().hex[:10]}"


def lighthousefs_cmdlines() -> list[str]:
    """The argv of every running process of ours (the daemons, `lighthouse ...`)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "lighthousefs" in line or "lighthouse_csi" in line:
            found.append(line)
    return found


def assert_no_password_anywhere(m) -> None:
    health = (m / ".lighthouse" / "health").read_text()
    assert PASSWORD not in health
    assert json.loads(health)["store"].startswith("redis://:***@127.0.0.1:")
    assert open(f"/proc/{m.pid}/cmdline", "rb").read()   # the daemon runs: its argv is readable
    assert not [line for line in lighthousefs_cmdlines() if PASSWORD in line]
    assert PASSWORD not in m.log.read_text()


pytestmark = [pytest.mark.mount, pytest.mark.redis]


@pytest.mark.expect_log("following the store failed; retrying", "snapshot at \\d+ not stored", "circuit opens after", "store circuit \\S+ -> \\S+", "following the store again", "store housekeeping failed")
def test_url_from_the_environment_shows_nowhere(mounter, locked_server):
    url = namespaced(locked_server.url)
    m = mounter("a", store="", env=dict(os.environ, LIGHTHOUSE_STORE=url))
    (m / "projects" / "p").mkdir()
    assert_no_password_anywhere(m)
    assert "(store redis://:***@" in m.log.read_text()


@pytest.mark.expect_log("following the store failed; retrying", "snapshot at \\d+ not stored", "circuit opens after", "store circuit \\S+ -> \\S+", "following the store again", "store housekeeping failed")
def test_url_from_a_file_shows_nowhere_even_through_an_outage(mounter, locked_server, tmp_path):
    secret = tmp_path / "store-url"
    secret.write_text(namespaced(locked_server.url) + "\n")
    secret.chmod(0o600)
    m = mounter("a", "--store-file", str(secret), store="")
    (m / "projects" / "p").mkdir()
    # Errors from redis-py while Redis is down end in log lines: none names the password.
    locked_server.kill()
    for _ in range(4):
        assert run(MKDIR, m / "projects" / "q").returncode != 0
    eventually(lambda: "store circuit closed -> open" in m.log.read_text(), timeout=30)
    locked_server.restart(keep_data=True)
    eventually(lambda: run(MKDIR, m / "projects" / "r").returncode == 0, timeout=30, interval=0.2)
    assert_no_password_anywhere(m)


@pytest.mark.expect_log("following the store failed; retrying", "snapshot at \\d+ not stored", "circuit opens after", "store circuit \\S+ -> \\S+", "following the store again", "store housekeeping failed")
def test_systemd_credential_wins_over_the_environment(mounter, locked_server, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "store").write_text(namespaced(locked_server.url))
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(credentials), LIGHTHOUSE_STORE="sqlite:///nonexistent/x.db")
    m = mounter("a", store="", env=env)
    assert_no_password_anywhere(m)


def test_refusals_do_not_print_the_password(tmp_path, locked_server):
    wrong = locked_server.url.replace(PASSWORD, PASSWORD + "-wrong")
    for url in (wrong, wrong.replace("redis://", "redsi://")):
        result = lighthouse("mount", str(tmp_path / "mnt"), "--log", str(tmp_path / "log"), check=False,
                            env=dict(os.environ, LIGHTHOUSE_STORE=url))
        assert result.returncode != 0 and ":***@" in result.stderr
        assert PASSWORD not in result.stderr + result.stdout
    assert PASSWORD not in (tmp_path / "log").read_text()
    result = lighthouse("log", "--store-file", str(tmp_path / "missing"), check=False)
    assert result.returncode == 2 and "cannot read the store URL" in result.stderr


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
    ("rediss://u:p@ss:w/rd@host/0?ssl_ca_certs=/a/b", "rediss://u:***@host/0?ssl_ca_certs=/a/b"),
    ("redis+sentinel://:pw@h1:26379,h2:26379/mymaster", "redis+sentinel://:***@h1:26379,h2:26379/mymaster"),
    ("redis://token@host", "redis://***@host"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("sqlite:///home/a@b/x.db", "sqlite:///home/a@b/x.db"),
    (":pw@host:6379", ":***@host:6379"),
])
def test_redacted(url, shown):
    from lighthousefs.store import url as store_url
    assert store_url.redacted(url) == shown


def test_precedence(tmp_path):
    from lighthousefs.store import url as store_url
    f = tmp_path / "f"
    f.write_text("redis://from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "store").write_text("redis://from-credential")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "LIGHTHOUSE_STORE": "redis://from-env"}
    assert store_url.resolve("redis://flag", str(f), "d", env) == "redis://flag"
    assert store_url.resolve(None, str(f), "d", env) == "redis://from-file"
    assert store_url.resolve(None, None, "d", env) == "redis://from-credential"
    del env["CREDENTIALS_DIRECTORY"]
    assert store_url.resolve(None, None, "d", env) == "redis://from-env"
    assert store_url.resolve(None, None, "d", {}) == "d"


def test_emit_and_log_take_the_url_from_a_file_or_the_environment(tmp_path, locked_server):
    url = namespaced(locked_server.url)
    secret = tmp_path / "store-url"
    secret.write_text(url + "\n")
    emitted = lighthouse("emit", "note", "--store-file", str(secret), "--data", '{"n": 1}')
    assert json.loads(emitted.stdout)["type"] == "note"
    logged = lighthouse("log", env=dict(os.environ, LIGHTHOUSE_STORE=url))
    assert [json.loads(line)["type"] for line in logged.stdout.splitlines()] == ["note"]
