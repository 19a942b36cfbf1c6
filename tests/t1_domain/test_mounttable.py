"""lighthousefs.mounttable, the one reader of the mount table, on a mountinfo written
by hand: the kernel's octal escapes come back as the characters they stand for."""
from lighthousefs import mounttable

MOUNTINFO = "\n".join([
    r"22 1 0:21 / /proc rw,relatime - proc proc rw",
    r"90 22 0:50 / /tmp/with\040space rw,nosuid shared:7 - fuse.lighthouse lighthouse rw,user_id=0",
    r"91 90 0:51 / /tmp/with\040space/tab\011new\012line\134back rw - tmpfs my\040tmpfs rw",
    r"92 22 0:52 / /tmp/with rw - tmpfs tmpfs rw",
    r"93 90 0:53 / /tmp/with\040space rw - tmpfs tmpfs rw",
]) + "\n"


def test_escapes_are_decoded(tmp_path, monkeypatch):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    monkeypatch.setattr(mounttable, "MOUNTINFO", str(tmp_path / "mountinfo"))
    entries = mounttable.read()
    assert [e.point for e in entries] == [
        "/proc", "/tmp/with space", "/tmp/with space/tab\tnew\nline\\back", "/tmp/with", "/tmp/with space"]
    assert entries[1] == mounttable.MountEntry("/tmp/with space", "fuse.lighthouse", "lighthouse",
                                               frozenset({"rw", "nosuid", "user_id=0"}))
    assert entries[2].source == "my tmpfs"
    # the topmost mount on a path is the one seen
    assert mounttable.mount_type("/tmp/with space") == "tmpfs"
    assert mounttable.mount_type("/tmp/nothing") is None
    # below root, root included; a prefix of the name is not a parent
    assert [e.point for e in mounttable.mounts_under("/tmp/with space/")] == [
        "/tmp/with space", "/tmp/with space/tab\tnew\nline\\back", "/tmp/with space"]
    assert [e.point for e in mounttable.mounts_under("/tmp/with")] == ["/tmp/with"]
    assert len(mounttable.mounts_under("/")) == 5


def test_unescape_leaves_other_backslashes():
    assert mounttable.unescape(r"/a\040b\011c\012d\134e") == "/a b\tc\nd\\e"
    assert mounttable.unescape(r"/a\x\04") == r"/a\x\04"
