"""A state.json or status that its close would leave invalid, on a real mount: the
close() answers EINVAL (where the caller sees it) and nothing is stored, while a shell
redirect (whose first close comes before its write) still stores what it writes; and a
name whose new file was refused can be created again at once."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid

import pytest

from lighthousefs import errors
from lighthousefs.api import Client
from tests.harness.mounts import eventually
from tests.harness.redis_servers import RedisServer

pytestmark = pytest.mark.mount

NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as srv:
        yield srv


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def bob(request, mounter, store_url):
    """A mount as agent bob (SQLite, or a fresh namespace on Redis), and its agents/bob."""
    if request.param == "sqlite":
        url = store_url
    else:
        url = f"{request.getfixturevalue('redis_server').url}?namespace=t{uuid.uuid4().hex[:10]}"
    m = mounter("bob", "--agent", "bob", store=url)
    (m / "agents" / "bob").mkdir(exist_ok=True)
    return m


def close_fails(fd: int, code: int) -> None:
    with pytest.raises(OSError) as err:
        os.close(fd)
    assert err.value.errno == code, err.value


def events_of(m, path: str) -> list[str]:
    lines = [json.loads(line) for line in (m / "events").read_text().splitlines()]
    return [e["type"] for e in lines if e["path"] == path]


def sh(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_an_unwritten_state_json_is_refused_at_close_and_a_redirect_still_works(bob, tmp_path):
    agent = bob / "agents" / "bob"
    state = agent / "state.json"
    # A new one, opened for writing and closed unwritten (O_TRUNC or not), or opened
    # read-only with O_CREAT: the close refuses it, and it is dropped.
    for flags in (NEW, os.O_WRONLY | os.O_CREAT, os.O_RDONLY | os.O_CREAT):
        close_fails(os.open(state, flags, 0o644), errno.EINVAL)
        eventually(lambda: not state.exists())
    # An existing one truncated by O_TRUNC and closed unwritten: refused, the old stays.
    state.write_bytes(b'{"step": 1}')
    close_fails(os.open(state, NEW), errno.EINVAL)
    assert state.read_bytes() == b'{"step": 1}'
    # Opened and closed without a change (touch): nothing to refuse.
    os.close(os.open(state, os.O_WRONLY | os.O_CREAT))
    assert subprocess.run(["touch", str(state)]).returncode == 0
    # ftruncate to 0 (truncate(1)) leaves it empty at close: refused where it checks.
    result = subprocess.run(["truncate", "-s", "0", str(state)], capture_output=True, text=True)
    assert result.returncode != 0 and "Invalid argument" in result.stderr, result
    assert state.read_bytes() == b'{"step": 1}'
    assert "write" not in events_of(bob, "agents/bob/state.json")   # (touch's times: a setattr)
    # bash closes the descriptor it dup'd before it writes: that close is refused (and
    # ignored by bash), the write and the last close store the document.
    state.unlink()
    assert sh("echo '{}' > state.json && echo '{\"step\": 2}' > state.json", agent).returncode == 0
    assert state.read_bytes() == b'{"step": 2}\n'
    # An editor's temporary file renamed over it.
    (agent / ".state.json.tmp").write_bytes(b'{"step": 3}')
    os.rename(agent / ".state.json.tmp", state)
    assert state.read_bytes() == b'{"step": 3}'
    # The API refuses the same bytes.
    with Client(f"sqlite://{tmp_path}/api.db", actor="bob") as api:
        api.files.mkdirs("agents/bob")
        with pytest.raises(errors.InvalidArgument):
            api.files.write("agents/bob/state.json", b"")


def test_an_empty_status_is_stored_as_the_api_stores_it(bob, tmp_path):
    """An empty status is an empty line: valid (rules.validate_format), from the mount
    as from the API."""
    status = bob / "agents" / "bob" / "status"
    os.close(os.open(status, NEW, 0o644))
    eventually(lambda: events_of(bob, "agents/bob/status") == ["mknod"])
    assert status.read_bytes() == b""
    with Client(f"sqlite://{tmp_path}/api.db", actor="bob") as api:
        api.files.mkdirs("agents/bob")
        api.files.write("agents/bob/status", b"")
        assert api.files.read("agents/bob/status") == b""


def test_a_new_file_refused_at_close_can_be_created_again_at_once(bob):
    """The kernel still holds the refused file's name when its close returns (the
    RELEASE that drops it comes later, and the name's invalidation after that): an open
    through that name must reach a new file, not answer ENOENT for the dropped one."""
    agent = bob / "agents" / "bob"
    state = agent / "state.json"
    for i in range(30):
        close_fails(os.open(state, NEW, 0o644), errno.EINVAL)
        fd = os.open(state, NEW, 0o644)
        os.write(fd, b'{"try": %d}' % i)
        os.close(fd)
        assert state.read_bytes() == b'{"try": %d}' % i
        state.unlink()


def test_a_new_file_refused_at_write_can_be_created_again_at_once(bob):
    state = bob / "agents" / "bob" / "state.json"
    for i in range(30):
        fd = os.open(state, NEW, 0o644)
        with pytest.raises(OSError) as err:
            os.write(fd, b"[1]")
        assert err.value.errno == errno.EINVAL
        close_fails(fd, errno.EINVAL)
        fd = os.open(state, NEW, 0o644)
        os.write(fd, b"{}")
        os.close(fd)
        state.unlink()
