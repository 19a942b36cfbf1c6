"""The error boundary (fs/boundary.py) around handlers, driven without the kernel."""
from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from lighthousefs import errors
from lighthousefs.fs.boundary import guard
from lighthousefs.metrics import Metrics


class Ops(pyfuse3.Operations):
    def __init__(self):
        super().__init__()
        self.metrics = Metrics()
        self._op_timers = {name: self.metrics.op_seconds.labels(name).observe for name in NAMES}
        self.forgotten = []

    async def getattr(self, inode, ctx=None):
        if inode == 1:
            raise errors.NotFound("no inode 1")
        if inode == 2:
            raise errors.NotPermitted("the layout")
        return {}["unexpected"]

    async def forget(self, inode_list):
        self.forgotten += inode_list
        {}["unexpected"]


NAMES = guard(Ops)


@pytest.mark.expect_log("failed unexpectedly; answering EIO")
def test_handlers_answer_errno_for_known_errors_and_eio_for_the_unexpected(caplog):
    ops = Ops()
    for inode, code in ((1, errno.ENOENT), (2, errno.EPERM), (3, errno.EIO)):
        with pytest.raises(pyfuse3.FUSEError) as raised:
            trio.run(ops.getattr, inode, None)
        assert raised.value.errno == code
    assert [r.levelno for r in caplog.records if "getattr" in r.getMessage()][-1] == logging.ERROR
    assert caplog.records[-1].exc_info is not None   # the unexpected comes with its traceback


@pytest.mark.expect_log("forget\\(.*\\) failed unexpectedly")
def test_forget_is_inside_the_boundary_and_never_raises(caplog):
    ops = Ops()
    trio.run(ops.forget, [(5, 1)])   # nothing may leave forget, not even FUSEError
    assert ops.forgotten == [(5, 1)]
    assert "forget" in caplog.records[-1].getMessage() and caplog.records[-1].exc_info is not None
    assert "forget" not in NAMES   # no reply, so not timed as a request
