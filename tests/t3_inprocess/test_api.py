"""The Python API without a mount: following the log as another producer appends."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from tests.harness.mounts import next_line

from lighthousefs import api
from lighthousefs.api import Client
from lighthousefs.store.sqlite import SQLiteStore


class CountingStore(SQLiteStore):
    """A real SQLite store that counts its reads of the log (each replay reads it)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.reads = 0

    def read(self, after_seq: int, limit: int = 1000):
        self.reads += 1
        return super().read(after_seq, limit)


def counting_client(tmp_path, monkeypatch) -> Client:
    monkeypatch.setattr(api, "open_store", lambda url, create=True: CountingStore(url[len("sqlite://"):]))
    return Client(f"sqlite://{tmp_path}/store.db", actor="writer")


def test_write_file_brings_the_projection_up_to_date_once(tmp_path, monkeypatch):
    """One read of the log per call (the catch-up before the change), not one for each
    helper write_file uses; the change itself is applied without reading it back."""
    with counting_client(tmp_path, monkeypatch) as client, Client(f"sqlite://{tmp_path}/store.db") as other:
        client.write_file("projects/demo/a/first.md", b"one\n")   # loads the tree, makes the dirs
        for i, path in enumerate(["projects/demo/a/first.md", "projects/demo/a/second.md",
                                  "projects/demo/a/first.md"]):
            client.store.reads = 0
            client.write_file(path, b"version %d\n" % i)
            assert client.store.reads == 1, path
        # Another producer's changes are still seen: the catch-up reads them.
        other.write_file("projects/demo/b/theirs.md", b"theirs\n")
        client.store.reads = 0
        client.write_file("projects/demo/b/mine.md", b"mine\n")
        assert client.store.reads <= 2   # the catch-up, and the end of what it found
        assert client.read_file("projects/demo/b/theirs.md") == b"theirs\n"
        assert client.read_file("projects/demo/a/first.md") == b"version 2\n"
        assert other.read_file("projects/demo/b/mine.md") == b"mine\n"


def test_follow_yields_what_another_producer_appends(tmp_path):
    url = f"sqlite://{tmp_path}/store.db"
    seen = []
    with Client(url, actor="reader") as reader, Client(url, actor="writer") as writer:
        writer.append("note", "projects/a", {"n": 0})

        def follow():
            for event in reader.follow():
                seen.append(event)
                if len(seen) == 3:
                    return
        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        writer.append("note", "projects/a", {"n": 1})
        writer.append("note", "projects/a", {"n": 2})
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert [(e.seq, e.actor, e.payload) for e in seen] == [
        (1, "writer", {"n": 0}), (2, "writer", {"n": 1}), (3, "writer", {"n": 2})]


def test_log_follow_prints_new_events_as_they_arrive(tmp_path):
    url = f"sqlite://{tmp_path}/store.db"
    with Client(url, actor="writer") as writer:
        writer.append("note", "projects/a", {"n": 0})
        follower = subprocess.Popen([sys.executable, "-m", "lighthousefs.cli", "log", "--follow", "--store", url],
                                    stdout=subprocess.PIPE, bufsize=0)   # unbuffered: select sees every line
        try:
            assert json.loads(next_line(follower))["data"] == {"n": 0}
            writer.append("note", "projects/a", {"n": 1})
            assert json.loads(next_line(follower))["data"] == {"n": 1}
        finally:
            follower.send_signal(signal.SIGINT)
            try:
                assert follower.wait(timeout=30) == 0
            finally:
                follower.kill()   # never left behind, even when it hangs
