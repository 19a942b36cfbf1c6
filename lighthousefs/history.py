"""Read-only views of a project as it was after an earlier event: projects/<p>/.history/<seq>/.

A past tree is rebuilt from the newest snapshot at or before that event plus the
events in between, in a worker thread, and the last few are kept. Contents need no
copy: past versions name chunks that the content-addressed store still holds.
"""
from __future__ import annotations

import cachetools
import trio

from .journal import Journal
from .store import Store
from .tree import Tree

TREES_KEPT = 8


class History:
    def __init__(self, store: Store, call):
        self.store = store
        self._call = call      # Journal.call_store: a worker thread, behind the breaker
        self._trees: cachetools.LRUCache[int, Tree] = cachetools.LRUCache(TREES_KEPT)
        self._building = trio.Lock()

    async def versions(self, project_path: str) -> list[int]:
        return await self._call(self.store.scope_seqs, project_path)

    async def tree_at(self, seq: int) -> Tree:
        async with self._building:   # one rebuild at a time; a second asker finds it cached
            tree = self._trees.get(seq)
            if tree is None:
                tree = await self._call(Journal.load_tree, self.store, seq)
                self._trees[seq] = tree
        return tree
