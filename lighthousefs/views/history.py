"""Read-only views of a project as it was after an earlier event: projects/<p>/.history/<seq>/.

A past tree is rebuilt from the newest snapshot at or before that event plus the
events in between, in a worker thread, and the most recently used are kept, within a
count and a total of inodes. Contents need no copy: past versions name chunks that the
content-addressed store still holds.
"""
from __future__ import annotations

import collections

import trio

from ..domain.tree import Tree
from ..engine.projection import load_tree
from ..store.guarded import GuardedStore

TREES_KEPT = 8
# A past tree is the whole namespace at its event, about 0.5 KiB an inode: keep at most
# this many inodes in all (about 70 MiB), except that the tree last used is always kept,
# however large, so a walk of one big version does not rebuild it at every request.
INODES_KEPT = 150_000


class History:
    def __init__(self, store: GuardedStore):
        self.store = store
        self._trees: collections.OrderedDict[int, Tree] = collections.OrderedDict()   # least recent first
        self.inodes_kept = 0
        self._building = trio.Lock()

    @property
    def trees_kept(self) -> int:
        return len(self._trees)

    async def versions(self, project_path: str) -> list[int]:
        return await self.store.scope_seqs(project_path)

    async def tree_at(self, seq: int) -> Tree:
        async with self._building:   # one rebuild at a time; a second asker finds it cached
            tree = self._trees.get(seq)
            if tree is not None:
                self._trees.move_to_end(seq)
                return tree
            tree = await self.store.call(load_tree, self.store.store, seq)   # a worker thread, behind the breaker
            self._trees[seq] = tree
            self.inodes_kept += len(tree.nodes)
            while len(self._trees) > 1 and (len(self._trees) > TREES_KEPT or self.inodes_kept > INODES_KEPT):
                _, evicted = self._trees.popitem(last=False)
                self.inodes_kept -= len(evicted.nodes)
        return tree
