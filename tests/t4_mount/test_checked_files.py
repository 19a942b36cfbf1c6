"""agents/<agent>/state.json and status, written the way shells and programs write them:
a refusal comes at write(), where the writer sees it, and leaves the stored content;
one redirect is one event; what is stored always fits the format (policy.py)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import time
import uuid

import pytest
from tests.harness.mounts import eventually
from tests.harness.redis_servers import RedisServer

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as srv:
        yield srv


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def two_nodes(request, mounter, store_url):
    """Mounts a and b of one store (SQLite, or a fresh namespace on Redis), and agents/a."""
    if request.param == "sqlite":
        url = store_url
    else:
        url = f"{request.getfixturevalue('redis_server').url}?namespace=t{uuid.uuid4().hex[:10]}"
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "agents" / "a").mkdir()
    (a / "projects" / "p").mkdir()
    eventually(lambda: (b / "agents" / "a").is_dir() and (b / "projects" / "p").is_dir())
    return a, b


def bash(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60)


def ok(command: str, cwd) -> None:
    result = bash(command, cwd)
    assert result.returncode == 0, f"{command!r}: {result.stderr}"


def refused(command: str, cwd) -> None:
    """The shell saw the refusal: a write error, and a failed command."""
    result = bash(command, cwd)
    assert result.returncode != 0 and "write error: Invalid argument" in result.stderr, (command, result)


def events_of(m, path: str) -> list[tuple[str, int | None]]:
    lines = [json.loads(line) for line in (m / "events").read_text().splitlines()]
    return [(e["type"], e["data"].get("size")) for e in lines if e["path"] == path]


def fails_with(code: int, fn, *args):
    with pytest.raises(OSError) as err:
        fn(*args)
    assert err.value.errno == code, f"expected {errno.errorcode[code]}, got {err.value!r}"


def test_a_redirect_replaces_state_json_and_status(two_nodes):
    """Item 1: bash closes the descriptor it dup'd before it writes; that close commits
    nothing, so the truncation is not lost and the new bytes do not land on the old."""
    a, b = two_nodes
    agent = a / "agents" / "a"
    ok("echo '{\"step\": 100}' > state.json && echo '{\"step\": 2}' > state.json", agent)
    assert (agent / "state.json").read_text() == '{"step": 2}\n'
    ok("echo 'working on a long task' > status && echo idle > status", agent)
    assert (agent / "status").read_text() == "idle\n"
    # One event for each redirect: the first creates, the second writes.
    assert events_of(a, "agents/a/state.json") == [("mknod", 14), ("write", 12)]
    assert events_of(a, "agents/a/status") == [("mknod", 23), ("write", 5)]
    eventually(lambda: (b / "agents" / "a" / "state.json").read_text() == '{"step": 2}\n')
    eventually(lambda: (b / "agents" / "a" / "status").read_text() == "idle\n")


def test_a_redirect_to_a_new_file_is_one_mknod_with_its_content(two_nodes):
    """Item 2: one shell redirect to a new file is one event, so no node and no
    .history ever sees the file empty."""
    a, b = two_nodes
    ok("echo x > new.txt && printf 'two\\nlines\\n' > other.txt", a / "projects" / "p")
    assert events_of(a, "projects/p/new.txt") == [("mknod", 2)]
    assert events_of(a, "projects/p/other.txt") == [("mknod", 10)]
    eventually(lambda: (b / "projects" / "p" / "new.txt").read_text() == "x\n")
    versions = sorted(os.listdir(b / "projects" / "p" / ".history"), key=int)
    assert all((b / "projects" / "p" / ".history" / v / "new.txt").read_text() == "x\n"
               for v in versions if (b / "projects" / "p" / ".history" / v / "new.txt").exists())


def test_a_refused_write_is_seen_by_the_shell_and_keeps_the_old_content(two_nodes):
    """Item 3: the refusal comes at write(), and what was there stays, for everyone."""
    a, b = two_nodes
    agent = a / "agents" / "a"
    ok("echo '{\"step\": 1}' > state.json && echo 'working' > status", agent)
    before = len((a / "events").read_text().splitlines())
    refused("echo '{oops' > state.json", agent)
    refused("printf 'a\\nb\\n' > status", agent)
    refused("head -c 5000 /dev/zero | tr '\\0' x > status", agent)
    refused("echo '{\"a\": NaN}' > state.json", agent)
    assert (agent / "state.json").read_text() == '{"step": 1}\n'
    assert (agent / "status").read_text() == "working\n"
    assert len((a / "events").read_text().splitlines()) == before      # nothing was stored
    # A new state.json refused at its first write is not left behind, empty or not.
    (a / "agents" / "c").mkdir()
    refused("echo '[1, 2]' > state.json", a / "agents" / "c")
    eventually(lambda: os.listdir(a / "agents" / "c") == [])   # dropped when its last handle is released
    assert events_of(a, "agents/c/state.json") == []
    assert (b / "agents" / "a" / "state.json").read_text() == '{"step": 1}\n'
    assert (b / "agents" / "a" / "status").read_text() == "working\n"


def test_refused_bytes_are_not_served_from_the_kernel_cache(mnt):
    """Whole pages accepted before a refused write are in the kernel's page cache: the
    refusal drops them, so a reader gets the stored content."""
    agent = mnt / "agents" / "a"
    agent.mkdir()
    state = agent / "state.json"
    old = '{"step": 1, "pad": "' + "p" * 9000 + '"}'
    state.write_text(old)
    assert state.read_text() == old          # cached by the kernel
    for _ in range(5):
        fd = os.open(state, os.O_WRONLY)      # overwritten in place
        try:
            os.write(fd, b'{"a": "' + b"x" * 8185)   # two whole pages that can begin a document
            fails_with(errno.EINVAL, os.write, fd, b"\x01")
        finally:
            fails_with(errno.EINVAL, os.close, fd)
        assert state.read_text() == old


def test_state_json_holds_a_json_object(mnt):
    """Item 4: checked at write() as far as the bytes so far tell, and whole at close."""
    agent = mnt / "agents" / "a"
    agent.mkdir()
    state = agent / "state.json"
    state.write_text('{"step": 1}')
    deep_ok = '{"a": ' * 63 + "{}" + "}" * 63                 # 64 levels
    too_deep = '{"a": ' + "[" * 64 + "]" * 64 + "}"           # 65 levels
    very_deep = '{"a": ' + "[" * 100_000                      # was a RecursionError and EIO
    for bad in ("[1, 2]", '"text"', "7", '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1} {}',
                too_deep, very_deep, '{"a": "\\x"}', '{"a": 01}'):
        fd = os.open(state, os.O_WRONLY | os.O_TRUNC)
        try:
            fails_with(errno.EINVAL, os.write, fd, bad.encode())
            fails_with(errno.EINVAL, os.write, fd, b"{}")       # the handle stays refused
        finally:
            fails_with(errno.EINVAL, os.close, fd)
        assert state.read_text() == '{"step": 1}', bad
    # What can still become valid is written; the close checks the whole.
    f = open(state, "w")
    f.write('{"step": 1')
    f.flush()
    fails_with(errno.EINVAL, f.close)
    assert state.read_text() == '{"step": 1}'
    for good in (deep_ok, '{"a": [1, -2.5e3, true, null, "\\u00e9\\n"], "b": {}}'):
        state.write_text(good)
        assert state.read_text() == good
    # The whole file is checked where it arrives whole: at a rename onto state.json.
    for bad in ('{"a": NaN}', too_deep, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        (agent / "tmp").write_text(bad)
        fails_with(errno.EINVAL, os.rename, agent / "tmp", state)
    # Written in pieces, out of order too.
    fd = os.open(state, os.O_WRONLY | os.O_TRUNC)
    try:
        for piece in ('{"k', 'ey": [1', "2, 3", "]}"):
            os.write(fd, piece.encode())
        os.pwrite(fd, b"9", 9)
    finally:
        os.close(fd)
    assert json.loads(state.read_text()) == {"key": [92, 3]}


def test_an_empty_state_json_is_never_stored(mnt):
    agent = mnt / "agents" / "a"
    agent.mkdir()
    fails_with(errno.EINVAL, os.mknod, agent / "state.json")
    result = subprocess.run(["touch", str(agent / "state.json")], capture_output=True, text=True)
    assert result.returncode != 0 and "Invalid argument" in result.stderr
    eventually(lambda: os.listdir(agent) == [])   # dropped when its last handle is released
    # Closed unwritten: refused at the close (not at the release that follows it).
    fails_with(errno.EINVAL, os.close, os.open(agent / "state.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    eventually(lambda: os.listdir(agent) == [])
    assert events_of(mnt, "agents/a/state.json") == []
    (agent / "state.json").write_text("{}")
    fails_with(errno.EINVAL, os.truncate, agent / "state.json", 0)
    ok(": > state.json", agent)      # bash ignores close(); the old content stays
    assert (agent / "state.json").read_text() == "{}"
    # An empty status is an empty line: allowed.
    ok(": > status", agent)
    eventually(lambda: events_of(mnt, "agents/a/status") == [("mknod", 0)])


def test_only_regular_files_are_named_state_json_or_status(mnt):
    agent = mnt / "agents" / "a"
    agent.mkdir()
    (mnt / "projects" / "p").mkdir()
    for name in ("state.json", "status"):
        fails_with(errno.EINVAL, os.mkdir, agent / name)
        fails_with(errno.EINVAL, os.symlink, "elsewhere", agent / name)
        fails_with(errno.EINVAL, os.mkfifo, agent / name)
        os.symlink("x", agent / "link")   # (in the agent's area: from elsewhere a link or rename is EXDEV)
        fails_with(errno.EINVAL, lambda: os.link(agent / "link", agent / name, follow_symlinks=False))
        fails_with(errno.EINVAL, os.rename, agent / "link", agent / name)
        os.unlink(agent / "link")
    assert os.listdir(agent) == []
    # No directory becomes an agent's by a rename: area roots are made by mkdir only.
    (mnt / "projects" / "p" / "b").mkdir()
    (mnt / "projects" / "p" / "b" / "state.json").write_text("{}")
    fails_with(errno.EPERM, os.rename, mnt / "projects" / "p" / "b", mnt / "agents" / "b")


@pytest.mark.parametrize("doc", [
    '{}', ' {"a": [1, -0.5e+3, 2E-2, true, false, null, "\\u00e9\\n\\"", {"b": []}]}\n', '{"é": "ü"}',
    '[]', '"x"', '1', '', '{"a": NaN}', '{"a": -Infinity}', '{"a": 01}', '{"a": 1.}', '{"a": .5}', '{"a": 1e}',
    '{"a": tru}', '{"a": "\\x"}', '{"a": "\\u12G4"}', '{"a": "\x01"}', '{"a": 1,}', '{"a": [1,]}', '{} {}',
    '{"a" 1}', '{"a": 1 2}', '{"a": 1-2}', '{"a": 1+2}', '{"a": 2.5.1}', '{"a": 1e5e5}', '{"a": -}',
    '{"a": -0.0e+00}', '{"a": 10E-1}', '\ufeff{}', '{' + '"a":{' * 63 + '}' * 64, '{' + '"a":[' * 63 + ']' * 63 + '}',
    '{' + '"a":{' * 64 + '}' * 65])
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_the_incremental_check_agrees_with_json_loads(doc, piece):
    """policy.FormatCheck (fed in pieces) and validate_format accept exactly the objects
    json.loads reads without NaN or Infinity, 64 levels deep at most, and refuse a
    wrong one at the first byte that makes it wrong."""
    from lighthousefs import errors
    from lighthousefs.domain.jsonprefix import JsonPrefix
    from lighthousefs.domain.rules import MAX_STATE_DEPTH, STATE_FILE, FormatCheck, validate_format

    def loads(text):
        try:
            value = json.loads(text, parse_constant=lambda name: 1 / 0)
        except (ValueError, ZeroDivisionError):
            return None
        return value if isinstance(value, dict) and text.count("{") + text.count("[") <= 64 else None

    data = doc.encode()
    good = loads(doc) is not None
    try:
        validate_format(STATE_FILE, data)
        assert good, doc
    except errors.InvalidArgument:
        assert not good, doc
    check = FormatCheck(STATE_FILE)
    refused_at = None
    for start in range(0, len(data), piece):
        try:
            check.feed(data[start:start + piece])
        except errors.InvalidArgument:
            refused_at = start
            break
    whole = JsonPrefix(MAX_STATE_DEPTH)
    try:
        for start in range(0, len(data), piece):
            whole.feed(data[start:start + piece])
        whole.finish()
        assert good, doc
    except ValueError:
        assert not good, doc
    if good:
        assert refused_at is None
    elif refused_at is not None:   # no valid document begins with the bytes up to there
        prefix = data[:refused_at + piece].decode(errors="ignore")
        assert not any(loads(prefix + tail) is not None for tail in ("", "}", '"}', "]}", '": 1}', "0}"))


def _reference(data: bytes) -> bool:
    """What state.json may hold, by json.loads: an object, no NaN/Infinity, 64 levels."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=lambda name: 1 / 0)
    except (ValueError, ZeroDivisionError, RecursionError):
        return False
    level, depth = [value], 0
    while level := [v for v in level if isinstance(v, (dict, list))]:
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return isinstance(value, dict) and depth <= 64


def test_the_incremental_check_agrees_with_json_loads_on_mutated_documents():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from lighthousefs import errors
    from lighthousefs.domain.jsonprefix import JsonPrefix
    from lighthousefs.domain.rules import MAX_STATE_DEPTH, STATE_FILE, FormatCheck, validate_format

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=20)
    noise = st.sampled_from(list(b'{}[]:,"\\ \n0123456789.eE+-tfnrulasNIy\x00\x1f\xc3\xa9\xff'))

    @settings(max_examples=200, deadline=None)
    @given(value=st.dictionaries(st.text(max_size=5), values, max_size=3), indent=st.sampled_from([None, 1]),
           edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from("idr"), noise), max_size=3),
           cuts=st.lists(st.floats(0, 1), max_size=4))
    def agree(value, indent, edits, cuts):
        data = bytearray(json.dumps(value, indent=indent, ensure_ascii=False).encode())
        for where, how, byte in edits:
            at = int(where * len(data))
            if how == "i":
                data.insert(at, byte)
            elif data:
                at = min(at, len(data) - 1)
                if how == "d":
                    del data[at]
                else:
                    data[at] = byte
        data = bytes(data)
        valid = _reference(data)
        try:
            validate_format(STATE_FILE, data)
            assert valid
        except errors.InvalidArgument:
            assert not valid
        check, whole, start = FormatCheck(STATE_FILE), JsonPrefix(MAX_STATE_DEPTH), 0
        try:
            for end in sorted(int(c * len(data)) for c in cuts) + [len(data)]:
                check.feed(data[start:end])
                whole.feed(data[start:end])
                start = end
        except errors.InvalidArgument:
            assert not valid   # every prefix of a valid document is accepted
            return
        try:
            whole.finish()
            assert valid
        except ValueError:
            assert not valid

    agree()


def test_a_checked_file_past_its_size_is_refused_before_it_is_read(mnt):
    """A state.json is read whole to be checked: `truncate -s 1T` of one (a hole, cheap
    to make) would have the daemon read a terabyte. Sizes past the kind's limit are
    refused where the caller sees them, before anything is read or changed."""
    agent = mnt / "agents" / "big"
    agent.mkdir()
    state = agent / "state.json"
    ok("echo '{\"step\": 1}' > agents/big/state.json", mnt.path)
    refused_size = subprocess.run(["truncate", "-s", "64M", str(state)], capture_output=True, text=True)
    assert refused_size.returncode != 0 and "too large" in refused_size.stderr.lower(), refused_size
    fails_with(errno.EFBIG, os.truncate, state, 1 << 40)
    fd = os.open(state, os.O_WRONLY | os.O_APPEND)
    try:
        # Whitespace, a valid prefix: the kernel splits a write into requests, so the
        # first call may return short; the one that passes the limit fails.
        written = 0
        with pytest.raises(OSError) as err:
            while written < 2 << 20:
                written += os.write(fd, b" " * (2 << 20))
        assert err.value.errno == errno.EFBIG and written <= 1 << 20
    finally:
        fails_with(errno.EFBIG, os.close, fd)   # the descriptor stays refused
    big = agent / "big.json"   # (in the agent's area: from elsewhere a rename is EXDEV)
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    fails_with(errno.EFBIG, os.rename, big, state)
    status = agent / "status"
    ok("echo working > agents/big/status", mnt.path)
    fails_with(errno.EINVAL, os.truncate, status, 1 << 40)
    assert json.loads(state.read_text()) == {"step": 1} and status.read_text() == "working\n"


def test_an_idle_descriptor_never_commits_anothers_unfinished_state_json(mnt):
    """A second descriptor that wrote nothing, closed or fsynced while the first one is
    half-way through a document: the unfinished document is not checked (and refused,
    and thrown away) on its behalf."""
    agent = mnt / "agents" / "a"
    agent.mkdir()
    state = agent / "state.json"
    state.write_text('{"step": 1, "note": "a long note"}')
    a = os.open(state, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(a, b'{"s"')
        os.close(os.open(state, os.O_WRONLY))      # flush (nothing), then release
        reader = os.open(state, os.O_RDONLY)
        try:
            os.fsync(reader)
        finally:
            os.close(reader)
        time.sleep(0.5)   # RELEASE comes after close() returns: let it run (a wait, not a timing check)
        os.write(a, b': 2}')
    finally:
        os.close(a)
    assert state.read_text() == '{"s": 2}'


def test_a_refusal_through_one_descriptor_is_reported_by_every_writer_it_undid(mnt):
    """A refused write puts the stored content back for every descriptor: one that had
    written a valid document must not then close with 0 for bytes that are gone."""
    agent = mnt / "agents" / "a"
    agent.mkdir()
    state = agent / "state.json"
    state.write_text('{"step": 1}')
    a = os.open(state, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(a, b'{"step": 2}')
        b = os.open(state, os.O_WRONLY)
        try:
            fails_with(errno.EINVAL, os.write, b, b"x")
        finally:
            fails_with(errno.EINVAL, os.close, b)
    finally:
        fails_with(errno.EINVAL, os.close, a)      # its bytes were discarded: it says so
    assert state.read_text() == '{"step": 1}'


def test_a_refused_new_file_is_logged_once_naming_the_rule(mnt):
    """Before: the refusal (INFO), then a WARNING that the new file was dropped. The
    drop is the refusal's expected consequence: it is logged at DEBUG only (and the
    log checker fails this test on a WARNING it did not declare)."""
    agent = mnt / "agents" / "a"
    agent.mkdir()
    refused("echo '[1, 2]' > state.json", agent)
    refused("printf 'a\\nb\\n' > status", agent)
    eventually(lambda: os.listdir(agent) == [])   # dropped when its last handle is released
    lines = [line for line in mnt.log.read_text().splitlines()
             if (" INFO " in line or " WARNING " in line or " ERROR " in line) and "agents/a/" in line]
    assert len(lines) == 2, lines
    assert all(" INFO " in line and "refused (EINVAL)" in line for line in lines), lines
