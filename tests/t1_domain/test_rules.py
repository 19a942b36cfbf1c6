"""The rules (domain/rules.py) for an acting agent, run by Tree.check and Tree.apply:
layout (EPERM), privacy and ownership (EACCES), areas (EXDEV), formats (EINVAL)."""
from __future__ import annotations

import errno
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lighthousefs import errors
from lighthousefs.domain import events, rules, snapshot
from lighthousefs.domain.events import Draft, Event
from lighthousefs.domain.tree import Tree

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755
OP = rules.OPERATOR


class World:
    """A tree built by checked, applied events of the current version."""

    def __init__(self):
        self.tree = Tree()
        self.seq = 0

    def apply(self, draft: Draft, version: int = events.VERSION):
        self.seq += 1
        return self.tree.apply(Event(self.seq, self.seq, draft.actor, draft.type, draft.path, draft.payload,
                                     version))

    def do(self, draft: Draft):
        self.tree.check(draft)
        assert self.apply(draft) is not None

    def split(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rpartition("/")
        return self.tree.resolve(head).ino, name.encode()

    def draft(self, actor: str, op: str, path: str, to: str = "") -> Draft:
        if op == "note":
            return Draft("note", path, {}, actor)
        if op in ("mkdir", "create"):
            parent, name = self.split(path)
            return Draft(events.MKNOD, path, {"parent": parent, "name": name,
                                              "mode": DIR if op == "mkdir" else FILE}, actor)
        if op == "rm":
            parent, name = self.split(path)
            return Draft(events.UNLINK, path, {"parent": parent, "name": name}, actor)
        if op in ("mv", "ln"):
            parent, name = self.split(path)
            new_parent, new_name = self.split(to)
            if op == "ln":
                return Draft(events.LINK, to, {"ino": self.tree.resolve(path).ino, "parent": new_parent,
                                               "name": new_name}, actor)
            return Draft(events.RENAME, path, {"parent": parent, "name": name, "new_parent": new_parent,
                                               "new_name": new_name, "to": to}, actor)
        ino = self.tree.resolve(path).ino
        if op == "write":
            return Draft(events.WRITE, path, {"ino": ino, "size": 3, "chunks": [b"h" * 20]}, actor)
        if op == "chmod":
            return Draft(events.SETATTR, path, {"ino": ino, "mode": 0o600}, actor)
        if op == "xattr":
            return Draft(events.SETXATTR, path, {"ino": ino, "name": b"user.x", "value": b"1"}, actor)
        raise ValueError(op)


def world() -> World:
    w = World()
    for agent in ("alice", "bob", "carol"):
        for top in ("memories", "agents"):
            w.do(w.draft(agent, "mkdir", f"{top}/{agent}"))
    w.do(w.draft(OP, "mkdir", "projects/p"))
    w.do(w.draft("alice", "mkdir", "projects/p/d"))
    for actor, path in (("alice", "memories/alice/plan.md"), ("alice", "agents/alice/status"),
                        ("alice", "agents/alice/state.json"), ("bob", "agents/bob/status"),
                        ("alice", "projects/p/f"), ("alice", "memories/shared/s")):
        w.do(w.draft(actor, "create", path))
    return w


EACCES, EPERM, EXDEV, EINVAL, EEXIST = errno.EACCES, errno.EPERM, errno.EXDEV, errno.EINVAL, errno.EEXIST
CASES = [
    # privacy: another agent's memories
    ("bob", "write", "memories/alice/plan.md", "", EACCES),
    ("bob", "create", "memories/alice/new.md", "", EACCES),
    ("bob", "mkdir", "memories/alice/sub", "", EACCES),
    ("bob", "rm", "memories/alice/plan.md", "", EACCES),
    ("bob", "chmod", "memories/alice", "", EACCES),
    ("bob", "note", "memories/alice/plan.md", "", EACCES),
    ("bob", "note", "memories/alice", "", EACCES),
    ("alice", "write", "memories/alice/plan.md", "", None),
    ("bob", "note", "memories/bob/x", "", None),
    ("bob", "note", "memories/shared/x", "", None),
    ("bob", "note", "projects/p", "", None),
    (OP, "write", "memories/alice/plan.md", "", None),
    (OP, "note", "memories/alice/plan.md", "", None),
    # ownership: another agent's agents/<x>
    ("bob", "write", "agents/alice/status", "", EACCES),
    ("bob", "chmod", "agents/alice/status", "", EACCES),
    ("bob", "xattr", "agents/alice/status", "", EACCES),
    ("bob", "chmod", "agents/alice", "", EACCES),
    ("bob", "create", "agents/alice/other", "", EACCES),
    ("bob", "rm", "agents/alice/status", "", EACCES),
    ("bob", "rm", "agents/carol", "", EACCES),
    ("bob", "rm", "memories/carol", "", EACCES),
    ("bob", "mkdir", "agents/dave", "", EACCES),
    ("bob", "mkdir", "memories/dave", "", EACCES),
    ("bob", "write", "agents/bob/status", "", None),
    ("bob", "rm", "agents/bob/status", "", None),
    (OP, "rm", "agents/carol", "", None),
    (OP, "mkdir", "agents/dave", "", None),
    # shared areas
    ("bob", "write", "projects/p/f", "", None),
    ("bob", "write", "memories/shared/s", "", None),
    ("bob", "mkdir", "projects/q", "", None),
    ("bob", "rm", "projects/p/f", "", None),
    # the fixed layout
    ("bob", "mkdir", "elsewhere", "", EPERM),
    (OP, "mkdir", "elsewhere", "", EPERM),
    ("bob", "create", "projects/loose", "", EPERM),
    (OP, "create", "projects/loose", "", EPERM),
    ("bob", "create", "memories/loose", "", EPERM),
    ("bob", "create", "agents/loose", "", EPERM),
    ("bob", "rm", "memories/shared", "", EPERM),
    (OP, "rm", "projects", "", EPERM),
    ("bob", "chmod", "agents", "", EPERM),
    ("bob", "chmod", "", "", EPERM),
    # the layout's directories are no agent's to chmod or tag, shared area roots included
    ("bob", "chmod", "projects", "", EPERM),
    ("bob", "xattr", "projects", "", EPERM),
    ("bob", "chmod", "memories/shared", "", EPERM),
    ("bob", "xattr", "memories/shared", "", EPERM),
    ("bob", "xattr", "memories", "", EPERM),
    (OP, "chmod", "projects", "", None),
    (OP, "chmod", "", "", None),
    ("bob", "chmod", "projects/p", "", None),
    (OP, "mkdir", "agents/operator", "", EINVAL),
    (OP, "mkdir", "memories/x y", "", EINVAL),
    ("bob", "mkdir", "projects/p/.history", "", EEXIST),
    # renames: area roots never move, nodes never change area
    ("bob", "mv", "agents/alice", "projects/p/alice", EACCES),
    ("bob", "mv", "memories/alice", "projects/p/alice", EACCES),
    ("bob", "mv", "agents/bob", "agents/robert", EPERM),
    ("bob", "mv", "agents/bob", "projects/p/bob", EPERM),
    (OP, "mv", "agents/alice", "projects/p/alice", EPERM),
    (OP, "mv", "projects", "agents/projects", EPERM),
    ("bob", "mv", "projects/p/d", "agents/bob2", EACCES),   # as mkdir agents/bob2 would be
    ("bob", "mv", "projects/p/d", "agents/bob", EPERM),
    ("bob", "mv", "projects/p/f", "memories/bob/f", EXDEV),
    ("bob", "mv", "memories/bob", "memories/shared/bob", EPERM),
    ("bob", "mv", "agents/bob/status", "projects/p/status", EXDEV),
    (OP, "mv", "projects/p/f", "memories/alice/f", EXDEV),
    (OP, "mv", "memories/shared/s", "projects/p/s", EXDEV),
    ("bob", "mv", "agents/alice/status", "projects/p/status", EACCES),
    ("bob", "mv", "projects/p/f", "projects/p/d/g", None),
    ("bob", "mv", "projects/p/d", "projects/d2", None),
    ("bob", "mv", "projects/p/d", "agents/bob/d", EXDEV),
    # hard links never cross areas
    ("bob", "ln", "agents/alice/state.json", "projects/p/x", EXDEV),
    (OP, "ln", "agents/alice/state.json", "projects/p/x", EXDEV),
    ("bob", "ln", "projects/p/f", "memories/shared/f", EXDEV),
    ("bob", "ln", "agents/bob/status", "agents/bob/status2", None),
    ("bob", "ln", "projects/p/f", "projects/p/d/f2", None),
    ("bob", "ln", "agents/alice/status", "agents/alice/s2", EACCES),
    # formats: what the tree can see of them (kinds; contents: check_content)
    ("bob", "mkdir", "agents/bob/state.json", "", EINVAL),
    ("bob", "mv", "projects/p/d", "projects/p/d", None),
]


@pytest.mark.parametrize("actor, op, path, to, expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}{'->' + c[3] if c[3] else ''}" for c in CASES])
def test_rules_table(actor, op, path, to, expected):
    """Tree.check refuses with the errno of the rule; Tree.apply skips the same event of
    the current version and applies it as before when it is of an older version."""
    w = world()
    draft = w.draft(actor, op, path, to)
    if expected is None:
        w.tree.check(draft)
        assert w.apply(draft) is not None
        return
    with pytest.raises(errors.LighthouseError) as refused:
        w.tree.check(draft)
    assert refused.value.errno == expected, refused.value
    before = {ino: node.dump() for ino, node in w.tree.nodes.items()}
    assert w.apply(draft) is None
    assert {ino: node.dump() for ino, node in w.tree.nodes.items()} == before
    if expected in (EACCES, EXDEV) and draft.type in events.TREE_TYPES:
        # Rights and areas bind events made under the rules only: an old one applies.
        assert w.apply(draft, version=1) is not None


def test_refusals_name_the_rule():
    w = world()
    for (actor, op, path, to), rule in ((("bob", "write", "memories/alice/plan.md", ""), "privacy"),
                                        (("bob", "write", "agents/alice/status", ""), "ownership"),
                                        (("bob", "mkdir", "elsewhere", ""), "layout"),
                                        (("bob", "ln", "agents/alice/status", "projects/p/x"), "areas")):
        with pytest.raises(errors.LighthouseError, match=rf"^{rule}: "):
            w.tree.check(w.draft(actor, op, path, to))


def test_rights_follow_the_node_not_the_path():
    """A file's area is where it is linked now: after its last link in a shared area is
    gone, only the remaining link's area counts (a hard link made before the rules)."""
    w = world()
    status = w.tree.resolve("agents/alice/status")
    # An old (version 1) link of alice's status into a project: allowed then.
    old = w.draft(OP, "ln", "agents/alice/status", "projects/p/status")
    assert w.apply(old, version=1) is not None
    w.do(w.draft(OP, "rm", "agents/alice/status"))
    assert rules.area_of(w.tree, status) == rules.area_root(w.tree, w.tree.resolve("projects/p").ino)
    w.tree.check(w.draft("bob", "write", "projects/p/status"))
    # A file moved within an area keeps the area's owner.
    w.do(w.draft("bob", "create", "agents/bob/tmp"))
    w.do(w.draft("bob", "mkdir", "agents/bob/sub"))
    w.do(w.draft("bob", "mv", "agents/bob/tmp", "agents/bob/sub/tmp"))
    with pytest.raises(errors.PermissionDenied):
        w.tree.check(w.draft("alice", "write", "agents/bob/sub/tmp"))


def test_check_content():
    w = world()
    state = w.draft("alice", "write", "agents/alice/state.json")
    rules.check_content(w.tree, state, b'{"a": 1}')
    for data, code in ((b"{not json", EINVAL), (b"", EINVAL), (b"[1]", EINVAL),
                       (b" " * (rules.MAX_STATE_BYTES + 1), errno.EFBIG)):
        with pytest.raises(errors.LighthouseError) as refused:
            rules.check_content(w.tree, state, data)
        assert refused.value.errno == code
    status = w.draft("bob", "write", "agents/bob/status")
    rules.check_content(w.tree, status, b"one line\n")
    with pytest.raises(errors.InvalidArgument, match="^format: "):
        rules.check_content(w.tree, status, b"two\nlines\n")
    rules.check_content(w.tree, w.draft("bob", "write", "projects/p/f"), b"{not json")
    # A name linked to a state.json is checked as one.
    w.do(w.draft("alice", "ln", "agents/alice/state.json", "agents/alice/copy"))
    with pytest.raises(errors.InvalidArgument):
        rules.check_content(w.tree, w.draft("alice", "write", "agents/alice/copy"), b"{not json")


def test_actor_names():
    rules.check_actor("operator")
    rules.check_actor("bob")
    for bad in ("", "shared", "../x", "bob\n"):
        with pytest.raises(errors.InvalidArgument):
            rules.check_actor(bad)
    with pytest.raises(errors.InvalidArgument):
        rules.check_agent_name("operator")


def test_old_snapshots_get_file_parents():
    """Snapshots made before files had a parent hold 0: load finds a directory of each."""
    w = world()
    f = w.tree.resolve("projects/p/f")
    for node in w.tree.nodes.values():
        if not node.is_dir:
            node.parent = 0
    loaded = snapshot.load(snapshot.dump(w.tree))
    assert loaded.nodes[f.ino].parent == w.tree.resolve("projects/p").ino
    assert all(node.parent for node in loaded.nodes.values())


def test_events_before_the_rules_replay_as_before():
    """A log of version 1 events that break today's rules replays to the same tree as
    it always did, from the start and from a snapshot."""
    w = World()
    old = [w.draft("bob", "mkdir", "agents/alice")]
    w.apply(old[0], version=1)
    for draft in (w.draft("bob", "create", "agents/alice/status"), w.draft("bob", "create", "projects/loose"),
                  w.draft("bob", "mkdir", "stray")):
        old.append(draft)
        assert w.apply(draft, version=1) is not None
    replayed = World()
    for draft in old:
        replayed.apply(draft, version=1)
    snap = snapshot.load(snapshot.dump(w.tree))
    assert {i: n.dump() for i, n in snap.nodes.items()} == {i: n.dump() for i, n in w.tree.nodes.items()} \
        == {i: n.dump() for i, n in replayed.tree.nodes.items()}


PATHS = ["memories/alice/a", "memories/bob/b", "memories/shared/s", "agents/alice/status", "agents/alice/x",
         "agents/bob/state.json", "agents/bob/y", "projects/p/f", "projects/p/d/g", "projects/p/d",
         "agents/carol", "memories/carol", "projects/q", "agents/bob", "elsewhere", "projects/loose"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol", OP]),
                          st.sampled_from(["mkdir", "create", "write", "chmod", "rm", "mv", "ln", "note"]),
                          st.sampled_from(PATHS), st.sampled_from(PATHS)), max_size=30))
def test_check_and_apply_agree(ops):
    """Random operations by random actors: an event Tree.check refuses is exactly one
    Tree.apply skips, so a node that only appends what it checked and a node that
    applies everything (e.g. a producer that skipped the checks) hold the same tree."""
    checked, blind = world(), world()
    for actor, op, path, to in ops:
        try:
            draft = checked.draft(actor, op, path, to)
        except errors.LighthouseError:
            continue   # a path that does not resolve: no event to make
        try:
            checked.tree.check(draft)
        except errors.LighthouseError:
            assert blind.apply(draft) is None, (actor, op, path, to)
            checked.seq += 1
            continue
        assert checked.apply(draft) is not None
        assert blind.apply(draft) is not None
    assert {i: n.dump() for i, n in checked.tree.nodes.items()} == {i: n.dump() for i, n in blind.tree.nodes.items()}
    resumed = snapshot.load(snapshot.dump(checked.tree))
    for node in checked.tree.nodes.values():
        if node.nlink:
            assert rules.area_of(resumed, resumed.nodes[node.ino]) == rules.area_of(checked.tree, node)


def test_a_file_linked_in_several_areas_is_the_operators_on_every_node():
    """Only events from before the rules can link a file into two areas. Its area is then
    SEVERAL_AREAS however a node got its tree (a replay from the start, a snapshot of
    this version, one from before files had a parent, one from before the mark), so a
    write by an agent is refused (and skipped) alike; the operator may write it; once
    its links are in one area again, that area's rules are back, on every node."""
    w = world()
    state = w.tree.resolve("agents/alice/state.json")
    log = []

    def old(draft):   # an event from before the rules
        log.append(draft)
        assert w.apply(draft, version=1) is not None

    old(w.draft("bob", "ln", "agents/alice/state.json", "projects/p/hl"))
    old(w.draft("bob", "ln", "projects/p/hl", "projects/p/d/hl2"))   # a second link there: still several
    assert w.tree.nodes[state.ino].parent == rules.SEVERAL_AREAS

    def trees(*before_the_mark):
        replayed = world()
        for draft in log:
            assert replayed.apply(draft, version=1) is not None
        yield "replayed", replayed.tree
        yield "snapshot", snapshot.load(snapshot.dump(w.tree))
        for stored in (0, *before_the_mark):   # from before files had a parent; before the mark
            saved = w.tree.nodes[state.ino].parent
            w.tree.nodes[state.ino].parent = stored
            try:
                yield f"old snapshot ({stored})", snapshot.load(snapshot.dump(w.tree))
            finally:
                w.tree.nodes[state.ino].parent = saved

    def write(actor, path, tree):
        return Draft(events.WRITE, path, {"ino": state.ino, "size": 3, "chunks": [b"h" * 20]}, actor)

    # (A snapshot from before the mark names the creating directory, or the first one found.)
    for how, tree in trees(w.tree.resolve("agents/alice").ino, w.tree.resolve("projects/p").ino):
        assert tree.nodes[state.ino].parent == rules.SEVERAL_AREAS, how
        for actor, path in (("bob", "projects/p/hl"), ("alice", "agents/alice/state.json")):
            with pytest.raises(errors.PermissionDenied, match="^areas: .* several areas"):
                tree.check(write(actor, path, tree))
            assert tree.apply(Event(tree.applied_seq + 1, 1, actor, events.WRITE, path,
                                    write(actor, path, tree).payload, events.VERSION)) is None, (how, actor)
        tree.check(write(OP, "projects/p/hl", tree))
    # Both links in the project go (by bob: they are names in his shared area); the file
    # is alice's again, on every node.
    for path in ("projects/p/hl", "projects/p/d/hl2"):
        draft = w.draft("bob", "rm", path)
        w.tree.check(draft)
        log.append(draft)
        w.apply(draft)
    for how, tree in trees(w.tree.resolve("agents/alice").ino):
        assert rules.area_of(tree, tree.nodes[state.ino]) == tree.resolve("agents/alice").ino, how
        tree.check(write("alice", "agents/alice/state.json", tree))
        with pytest.raises(errors.PermissionDenied, match="^ownership: "):
            tree.check(write("bob", "agents/alice/state.json", tree))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["create", "ln", "mv", "rm", "mkdir"]),
                          st.sampled_from(PATHS), st.sampled_from(PATHS)), max_size=25))
def test_events_before_the_rules_give_one_area_on_every_node(ops):
    """Events from before the rules (links and renames across areas among them): a
    replay from the start and a load of its snapshot (of this version, or of one from
    before files had a parent) give every node the same area, and so the same rights."""
    w = world()
    for op, path, to in ops:
        try:
            w.apply(w.draft(OP, op, path, to), version=1)
        except errors.LighthouseError:
            continue   # a path that does not resolve: no event to make
    files = {node: node.parent for node in w.tree.nodes.values() if not node.is_dir}
    for node in files:
        node.parent = 0
    before_parents = snapshot.dump(w.tree)
    for node, parent in files.items():
        node.parent = parent
    for loaded in (snapshot.load(snapshot.dump(w.tree)), snapshot.load(before_parents)):
        for node in loaded.nodes.values():
            assert rules.area_of(loaded, node) == rules.area_of(w.tree, w.tree.nodes[node.ino]), node.ino
