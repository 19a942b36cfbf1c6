"""The kernel's references (fs/kernel.py), counted outside the domain tree."""
from __future__ import annotations

from lighthousefs.domain.layout import PROJECTS_INO
from lighthousefs.domain.tree import Tree
from lighthousefs.fs.kernel import Kernel


def test_references_are_counted_per_inode_and_released_at_the_last_forget():
    tree = Tree()
    open_inos: set[int] = set()
    kernel = Kernel(tree, open_inos.__contains__)
    node = tree.nodes[PROJECTS_INO]
    kernel.remember(node, 1, b"projects")
    kernel.remember(node)
    assert kernel.inodes == 1 and kernel.is_pinned(PROJECTS_INO) and tree.is_pinned(PROJECTS_INO)
    assert not kernel.forget(PROJECTS_INO, 1)   # one reference left
    open_inos.add(PROJECTS_INO)
    assert not kernel.forget(PROJECTS_INO, 1)   # none left, but a file is open on it
    assert kernel.inodes == 0 and kernel.is_pinned(PROJECTS_INO)
    open_inos.clear()
    assert not kernel.is_pinned(PROJECTS_INO)
    assert kernel.forget(PROJECTS_INO, 1) and PROJECTS_INO not in kernel.where


def test_the_tree_holds_no_kernel_counts():
    assert "lookups" not in Tree().nodes[PROJECTS_INO].__slots__
