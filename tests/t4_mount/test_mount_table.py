"""A mount at a path with a space (the mount table writes it as \\040) is found by every
reader: lighthousefs.mounttable (the daemon's), the harness's, the benchmarks' and the
CSI driver's; and the daemon refuses to mount over it."""
import pytest

from benchmarks import mounts as bench
from lighthouse_csi import mounts as csi
from lighthousefs import mounttable
from tests.harness import mounts as harness

pytestmark = pytest.mark.mount


def test_a_mount_at_a_path_with_a_space_is_found_by_every_reader(mounter, tmp_path):
    m = mounter("with space\tand tab")
    point = str(m.path)
    assert " " in point and "\t" in point
    assert mounttable.mount_type(point) == "fuse.lighthouse"
    assert point in [e.point for e in mounttable.mounts_under(str(tmp_path))]
    assert harness.is_mounted(m.path) and harness.mounts_under(tmp_path) == [point]
    assert bench.is_mounted(m.path)
    assert csi.is_mount_point(point) and csi.mount_points()[point] == "fuse.lighthouse"
    # The daemon reads the table before mounting: a live mount there is refused by name.
    again = harness.lighthouse("mount", point, "--store", m.store, check=False)
    assert again.returncode != 0 and "already a mount point" in again.stderr, again.stderr
