"""The Python API without a mount: following the log as another producer appends."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from lighthousefs.api import Client
from mounting import next_line


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
