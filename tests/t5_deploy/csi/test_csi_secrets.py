"""The CSI driver with a password-protected Redis (the URL from a Secret, by
$LIGHTHOUSE_STORE): the password is in no argv of the driver or of the daemons
it starts, in no log line and in no file of their mounts."""

import json
import os
import re
import uuid

import psutil
import pytest
from csi_harness import LIGHTHOUSE_CMD
from test_csi_mount import cat, create, publish, unpublish, write

from tests.harness.redis_servers import RedisServer

pytestmark = [
    pytest.mark.mount,
    pytest.mark.redis,
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root"),
]

PASSWORD = "csi-s3cret-" + uuid.uuid4().hex[:12]


def test_the_store_password_shows_nowhere(make_driver, base):
    with RedisServer(password=PASSWORD) as server:
        # Every command line the driver runs, recorded: even a short-lived
        # `lighthouse mount` must not carry the URL.
        recorded = base / "argv.log"
        wrapper = base / "lighthouse"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {recorded}\nexec {LIGHTHOUSE_CMD} "$@"\n')
        wrapper.chmod(0o755)
        driver = make_driver(store=f"{server.url}?namespace=csi{uuid.uuid4().hex[:8]}",
                             lighthouse_cmd=str(wrapper))
        volume = create(driver, project="alpha")
        target = publish(driver, volume.volume_id, volume.volume_context)
        write(target / "notes.md", "hello\n")
        assert cat(target / "notes.md") == "hello\n"

        ours = [p for p in psutil.process_iter(["cmdline"])
                if str(base) in " ".join(p.info["cmdline"] or [])]
        daemons = [p for p in ours if "--foreground" in p.info["cmdline"]]
        assert len(daemons) >= 2   # the node's staging mount and the controller's own
        for proc in ours:
            assert PASSWORD not in " ".join(proc.info["cmdline"])
        logs = [driver.log]
        for proc in daemons:
            cmdline = proc.info["cmdline"]
            logs.append(cmdline[cmdline.index("--log") + 1])
            mountpoint = cmdline[cmdline.index("mount") + 1]
            health = open(os.path.join(mountpoint, ".lighthouse", "health")).read()
            assert PASSWORD not in health
            assert re.match(r"redis://:\*\*\*@127\.0\.0\.1:\d+/0", json.loads(health)["store"])
        for log in logs:
            assert PASSWORD not in open(log, errors="replace").read()
        unpublish(driver, volume.volume_id, target)
        assert "mount" in recorded.read_text() and PASSWORD not in recorded.read_text()
        driver.stop()
