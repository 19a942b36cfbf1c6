"""The memory tool of agent frameworks (view, create, str_replace, insert, delete, rename)
over the API's file verbs (api_files.py): an agent keeps its memories in lighthousefs
with its actor's rights, checked as on its mount.

    tool = MemoryTool(Client(url, actor="alice").files)
    tool.create("/memories/alice/plan.md", "1. read the memories\\n")
    print(tool.view("/memories/alice/plan.md"))
    result = tool.run(call)   # a tool call's input ({"command": "view", "path": ...}) -> its text

Paths are the namespace's, from its root (`/memories/alice/plan.md`), or below `root`.
Each method returns the text a model is shown and raises a lighthousefs.errors
exception (with its errno) when refused; `run` answers that as an "Error: ..." text.
"""
from __future__ import annotations

import errno

from . import errors
from .api_files import Files, logged_refusal
from .domain import events, rules

VIEW_DEPTH = 2   # levels of a directory that view shows


class MemoryTool:
    def __init__(self, files: Files, root: str = ""):
        self.files = files
        self.root = root.strip("/")

    def run(self, call: dict) -> str:
        """One tool call: its input as the model gave it, and the text to give back."""
        command = call.get("command")
        try:
            if command == "view":
                return self.view(call["path"], call.get("view_range"))
            if command == "create":
                return self.create(call["path"], call["file_text"])
            if command == "str_replace":
                return self.str_replace(call["path"], call["old_str"], call.get("new_str", ""))
            if command == "insert":
                return self.insert(call["path"], call["insert_line"], call["insert_text"])
            if command == "delete":
                return self.delete(call["path"])
            if command == "rename":
                return self.rename(call["old_path"], call["new_path"])
        except KeyError as exc:
            return f"Error: {command} needs {exc.args[0]!r}"
        except errors.LighthouseError as exc:
            return f"Error: {exc} ({errno.errorcode.get(exc.errno, exc.errno)})"
        return f"Error: unknown command {command!r}"

    def view(self, path: str, view_range: list[int] | None = None) -> str:
        """A directory: its entries VIEW_DEPTH levels deep, with sizes. A file: its lines,
        numbered from 1, or lines start..end of them (end -1: to the last)."""
        where = self._path(path)
        if self.files.stat(where).kind == "dir":
            lines = [f"{path.rstrip('/')}/ (up to {VIEW_DEPTH} levels deep):"]
            self._listing(where, path.rstrip("/"), VIEW_DEPTH, lines)
            return "\n".join(lines)
        text = self.files.read(where).decode("utf-8", "replace")
        numbered = text.splitlines()
        start, end = 1, len(numbered)
        if view_range is not None:
            start, end = view_range
            end = len(numbered) if end == -1 else end
            if not 1 <= start <= max(end, 1) or end > len(numbered):
                raise errors.InvalidArgument(f"view_range {view_range} is outside the {len(numbered)} lines "
                                             f"of {path}")
        return "\n".join(f"{n:6d}\t{numbered[n - 1]}" for n in range(start, end + 1))

    def create(self, path: str, file_text: str) -> str:
        """Create the file, or replace what it holds (its directories are made)."""
        self.files.write(self._path(path), file_text.encode(), parents=True)
        return f"File created successfully at {path}"

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        """Replace `old_str`, which must appear exactly once, by `new_str`."""
        def change(text: str) -> str:
            count = text.count(old_str) if old_str else 0
            if count != 1:
                raise errors.InvalidArgument(
                    f"no replacement was made: old_str appears {count} times in {path}, not exactly once")
            return text.replace(old_str, new_str, 1)
        self._edit(path, change)
        return f"The file {path} has been edited"

    def insert(self, path: str, insert_line: int, insert_text: str) -> str:
        """Insert lines after line `insert_line` (0: at the start)."""
        def change(text: str) -> str:
            lines = text.splitlines(keepends=True)
            if not 0 <= insert_line <= len(lines):
                raise errors.InvalidArgument(f"insert_line {insert_line} is outside 0..{len(lines)} for {path}")
            before = "".join(lines[:insert_line])
            if before and not before.endswith("\n"):
                before += "\n"
            added = insert_text if insert_text.endswith("\n") or insert_line == len(lines) else insert_text + "\n"
            return before + added + "".join(lines[insert_line:])
        self._edit(path, change)
        return f"The file {path} has been edited"

    def delete(self, path: str) -> str:
        """Delete a file, or a directory with everything in it (each removal checked)."""
        self._delete(self._path(path))
        return f"Deleted {path}"

    def rename(self, old_path: str, new_path: str) -> str:
        """Move a file or directory (the destination's directories are made)."""
        old, new = self._path(old_path), self._path(new_path)
        if "/" in new:
            directory = new.rsplit("/", 1)[0]
            if not self.files.exists(directory):
                self._check_move(old, directory)   # before any directory is made
            self.files.mkdirs(directory)
        self.files.rename(old, new)
        return f"Renamed {old_path} to {new_path}"

    # ---------------------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        path = path.strip("/")
        return f"{self.root}/{path}" if self.root and path else self.root or path

    def _edit(self, path: str, change) -> None:
        def on_bytes(data: bytes) -> bytes:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise errors.InvalidArgument(f"{path} is not UTF-8 text") from None
            return change(text).encode()
        self.files.edit(self._path(path), on_bytes)

    def _listing(self, where: str, shown: str, depth: int, lines: list[str]) -> None:
        for name, st in self.files.list(where, stats=True):
            if st.kind == "dir":
                lines.append(f"{'-':>8}\t{shown}/{name}/")
                if depth > 1:
                    self._listing(f"{where}/{name}" if where else name, f"{shown}/{name}", depth - 1, lines)
            else:
                lines.append(f"{st.size:>8}\t{shown}/{name}")

    def _check_move(self, old: str, directory: str) -> None:
        """Refuse a rename to a missing `directory` that would be refused once it is
        made: the rename is checked as if to its first missing name, which is in the
        area (and under the rights) of the directory it would be made in."""
        names = directory.split("/")
        made = next(i for i in range(len(names), -1, -1) if self.files.exists("/".join(names[:i])))
        parent = self.files.stat("/".join(names[:made]))
        head, _, name = old.rpartition("/")
        old_parent, tree = self.files.stat(head), self.files.tree()
        missing = names[made].encode()
        draft = events.rename(old, old_parent.ino, name.encode(), parent.ino, missing,
                              to=tree.path(parent.ino, missing), actor=self.files.actor)
        with logged_refusal(self.files.actor):
            tree.check(draft)

    def _delete(self, where: str) -> None:
        if not where:
            raise errors.LighthouseError("the root cannot be changed", errno_=errno.EBUSY)
        if self.files.stat(where).kind == "dir":
            # May the actor remove the directory itself? Asked before anything in it is
            # removed: a delete refused at its root removes nothing (the rules alone:
            # that it is not empty yet is no refusal).
            head, _, name = where.rpartition("/")
            parent, tree = self.files.stat(head), self.files.tree()
            with logged_refusal(self.files.actor):
                rules.check_event(tree, self.files.actor, events.UNLINK,
                                  {"parent": parent.ino, "name": name.encode()}, where)
            for name in self.files.list(where):
                self._delete(f"{where}/{name}")
        self.files.delete(where)
