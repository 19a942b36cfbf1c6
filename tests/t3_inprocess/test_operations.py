"""LighthouseOperations driven in-process, without the kernel (as s3ql's tier 3): the
handlers, the writer behind them and the kernel's counts, on a real SQLite store."""
from __future__ import annotations

import os
import stat

import pyfuse3
import pytest

from lighthousefs.domain.layout import PROJECTS_INO
from tests.harness.inprocess import CTX, run_operations


def test_a_file_created_written_and_closed_is_stored_once_and_counted_by_the_kernel(tmp_path):
    async def body(ops):
        project = await ops.mkdir(PROJECTS_INO, b"p", 0o755, CTX)
        info, attr = await ops.create(project.st_ino, b"notes.md", 0o644, os.O_WRONLY | os.O_CREAT, CTX)
        ino = attr.st_ino
        assert ino in ops.writer.new_files   # not logged before its first close
        assert await ops.write(info.fh, 0, b"hello") == 5
        assert (await ops.getattr(ino)).st_size == 5   # the open buffer's size
        await ops.flush(info.fh)
        await ops.release(info.fh)
        assert ino not in ops.writer.new_files and ino not in ops.writer.open_files
        node = ops.tree.nodes[ino]
        assert node.size == 5 and stat.S_ISREG(node.mode)
        assert ops.kernel.lookups[ino] == 1 and ops.kernel_inodes == 2   # the project and the file
        await ops.forget([(ino, 1)])
        assert ino not in ops.kernel.lookups
        info = await ops.open(ino, os.O_RDONLY, CTX)
        assert await ops.read(info.fh, 0, 100) == b"hello"
        await ops.release(info.fh)

    run_operations(tmp_path, body)


@pytest.mark.expect_log("failed unexpectedly")
def test_an_unexpected_error_in_a_handler_is_eio_and_forget_survives_anything(tmp_path, caplog):
    async def body(ops):
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await ops.getattr(10**9)   # no such inode: ENOENT
        assert raised.value.errno == 2
        ops.tree.release_orphan = None   # forget now fails inside: the boundary keeps it in
        await ops.forget([(PROJECTS_INO, 1)])
        assert "forget" in caplog.text and "unexpectedly" in caplog.text

    run_operations(tmp_path, body)
