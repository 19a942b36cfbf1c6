"""Where a file with several links belongs. Links never cross areas under the rules, so
any link's directory names a file's area; only events from before the rules can link a
file into two areas, which makes it rules.SEVERAL_AREAS (the operator's alone). Each
answer is a function of the tree alone, so a replay and a snapshot's load agree."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import rules
from .layout import ROOT_INO

if TYPE_CHECKING:
    from .node import Node
    from .tree import Tree


def find_link(tree: Tree, node: Node, near: int | None) -> None:
    """The directory `node.parent` names lost its link to `node`, which has others:
    name one of those (searched in its area first, where links stay). Rare: only a
    hard-linked file loses the link it was recorded by."""
    for top in ((near,) if near is not None else ()) + (ROOT_INO,):
        for directory in tree.walk(top):
            if directory.is_dir and node.ino in directory.entries.values():
                node.parent = directory.ino
                return


def settle_area(tree: Tree, node: Node) -> None:
    """Name a directory of a file's links, or SEVERAL_AREAS when they are in more
    than one area: a function of the tree alone, so replay and load agree. Walks the
    whole tree: only for events from before the rules (links across areas)."""
    dirs = [d.ino for d in tree.walk() if d.is_dir and node.ino in d.entries.values()]
    if len({rules.area_root(tree, ino) for ino in dirs}) > 1:
        node.parent = rules.SEVERAL_AREAS
    elif dirs and node.parent not in dirs:
        node.parent = dirs[0]



def settle_areas_below(tree: Tree, moved: Node, crossed: bool) -> None:
    """After a rename across areas (an event from before the rules): the area of
    each file with links elsewhere that it carried may have changed."""
    if crossed:
        for node in tree.walk(moved.ino) if moved.is_dir else (moved,):
            if not node.is_dir and node.nlink > 1:
                settle_area(tree, node)
