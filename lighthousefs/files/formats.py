"""The files whose content has a format (agents/<a>/state.json and status): which
files they are, and the checks of their content as it is written or as a file
becomes one (a rename or a link). domain/rules.py says what the formats are.
"""
from __future__ import annotations

import stat

import trio

from .. import errors
from ..domain.rules import FormatCheck, Policy, check_format_size
from ..domain.tree import Node
from .handles import UNKNOWN, FileHandle
from .writer import CONTENT_REFUSALS, LARGE_CHECK, Writer, validate


class Formats:
    def __init__(self, policy: Policy, writer: Writer):
        self.policy = policy
        self.writer = writer

    def format_of(self, ino: int) -> bytes | None:
        new = self.writer.new_files.get(ino)
        if new is not None:
            return self.policy.format_of(new.parent, new.name)
        return self.policy.format_of_inode(ino)

    async def check_fits(self, parent: int, name: bytes, node: Node) -> None:
        """`node` may become parent/name: a state.json or status there must fit its
        format. (No directory becomes an agent's: area roots are never renamed.)"""
        await self.check_format(self.policy.format_of(parent, name), node)

    async def check_format(self, kind: bytes | None, node: Node) -> None:
        """A file that becomes agents/<a>/state.json or status must already fit the format."""
        if kind is None:
            return
        if not stat.S_ISREG(node.mode):
            raise errors.InvalidArgument(f"{kind.decode()} must be a regular file")
        open_file = self.writer.open_files.get(node.ino)
        buffer = open_file.buffer if open_file else self.writer.committed_buffer(node)
        check_format_size(kind, buffer.size)
        await validate(kind, await buffer.read(0, buffer.size))

    async def check_write(self, handle: FileHandle, off: int, buf: bytes) -> None:
        """A write to a file with a format (`off` where it lands: the end for O_APPEND)."""
        open_file = handle.open_file
        if open_file.kind is UNKNOWN:
            open_file.kind = self.format_of(open_file.ino)
        if open_file.kind is not None:
            await self._check_write(handle, open_file.buffer.size if handle.append else off, buf)

    async def _check_write(self, handle: FileHandle, off: int, buf: bytes) -> None:
        """Refuse (EINVAL) a write to a state.json or status as soon as the file's bytes
        cannot begin a valid one: a shell sees the error of write(), never that of
        close(). A write at the end continues the check of the bytes before it; any
        other write checks the file as it will be, from its start. (The kernel sends one
        write at a time per inode: none comes between this check and its write.)"""
        open_file = handle.open_file
        buffer, check = open_file.buffer, open_file.check
        try:
            check_format_size(open_file.kind, max(buffer.size, off + len(buf)))
            if check is not None and open_file.check_mark == (buffer, buffer.generation) \
                    and off == check.fed == buffer.size:
                data = buf
            else:
                check = FormatCheck(open_file.kind)
                old = await buffer.read(0, buffer.size)
                data = old[:off].ljust(off, b"\0") + buf + old[off + len(buf):]
            open_file.check = None
            if len(data) > LARGE_CHECK:
                await trio.to_thread.run_sync(check.feed, data)
            else:
                check.feed(data)
        except CONTENT_REFUSALS as exc:
            handle.refused = type(exc)(f"{self.writer.name_of(open_file.ino)}: {exc}")
            self.writer.revert(open_file)
            raise handle.refused from None
        open_file.check = check
