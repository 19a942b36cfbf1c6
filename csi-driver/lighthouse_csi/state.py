"""The node's state, a small JSON file, so a restarted driver knows which
namespace mounts (staging) it made and which targets it bound from them.

Layout: {"volumes": {volume_id: {"project", "agent", "subpath", "readOnly",
"staging", "targets": {target_path: {"readonly": bool}}}}}

Writes are atomic (temp file, fsync, rename): a crash leaves the old or the
new file, never half of one. Entries are written before the mount they
describe (write-ahead), so a crash between the two leaves a record that the
next call repairs or removes, never a mount nobody knows about.
"""

import contextlib
import json
import os
import threading


class State:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        data.setdefault("volumes", {})
        return data

    def _write(self, data: dict) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def edit(self):
        """Read-modify-write under the process lock; saved when the block
        ends without an exception."""
        with self._lock:
            data = self.read()
            yield data
            self._write(data)
