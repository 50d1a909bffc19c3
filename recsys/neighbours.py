"""A cache of each item's nearest catalogue neighbours, for "similar items" on product pages.

Similar-item lists are the same for every visitor, so the API keeps each item's top `depth`
neighbours (computed in one batched search at load, or on first use) and answers a request by
dropping excluded, deactivated and deleted items from that list. Each list is dated with the catalogue versions it
was searched at (read before the search). While nothing was upserted or activated since (the catalogue's additions
version), it holds as it is: a deactivation, a deletion or a compaction only takes items away, which the read
drops. Otherwise it is brought up to date from the changes since (`Catalogue.ids_touched_since`,
`ids_changed_since`) instead of searched again: an item upserted, replaced or activated since is scored against the
anchor as the index scores it (`VectorIndex.similarities`) and put in its place when it passes the list's last
score; an item of the list whose new vector falls below that score leaves it, and the list is one shorter. A list
is searched again when the change log no longer reaches back to it, when the anchor's own vector changed, when a
score lands too near the last one to place, or when a list that changes shortened has too few items left for a
read. With an exact (flat) index the list is then what a new search returns; with an approximate one (HNSW, IVF) an
added item is placed by its exact score, where a search might have missed it."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from cachetools import LRUCache

from recsys.retrieval.exact import tied

if TYPE_CHECKING:
    from recsys.catalogue import Catalogue
    from recsys.catalogue_state import CatalogueState

Search = Callable[[Sequence[str]], tuple[list[list[str]], list[list[float]]]]
"""item ids → (neighbour ids, scores) per item, best first, the item itself left out."""
Similarities = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(an anchor's vector [d], items' catalogue vectors [n, d]) → the score a search gives each item
(`VectorIndex.similarities`)."""

TOLERANCE = 1e-4
"""How near a list's last score a changed item's score counts as reaching it (relative to scores above 1): a search
orders scores equal to 1e-5 by catalogue row, and its kernel can differ from a dot product in the last bits."""


def margin(floor: float) -> float:
    """`TOLERANCE` at the scale of `floor`."""
    return TOLERANCE * max(1.0, abs(floor))


def ordered(state: CatalogueState, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The order a search gives `ids` by `scores`: best first, scores equal to 1e-5 by catalogue row."""
    rows = state.rows(ids.tolist())
    return np.lexsort((rows, -tied(scores)))


class NeighbourCache:
    """item id → its top `depth` neighbours (ids and scores as numpy arrays) with the catalogue version and vectors
    version they were searched at, LRU-bounded; a list is brought up to date with the changes since, or searched
    again (see the module docstring; `catalogue=None`: lists change only with `clear()`)."""

    def __init__(self, catalogue: Catalogue | None = None, depth: int = 50, maxsize: int = 100_000,
                 similarities: Similarities | None = None) -> None:
        self.catalogue = catalogue
        self.depth = depth
        self.similarities = similarities or _dot
        self._cache: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self._cleared = 0
        self.hits = 0
        self.misses = 0
        self.updated = 0  # of the hits, lists a change put a new item in or moved an item of

    def scores(self, state: CatalogueState, anchor: str, rows: np.ndarray) -> np.ndarray:
        """The score against `anchor` of the items at catalogue `rows` of `state`, as a search for the anchor's
        neighbours scores them."""
        return self.similarities(state.vectors[state.position[anchor]], state.vectors[rows])

    def reaches(self, state: CatalogueState, anchor: str, item_ids: Iterable[str], floor: float) -> bool:
        """Whether one of `item_ids` that is active in `state` scores at least `floor` against `anchor` (less
        `TOLERANCE`): it may then enter a list of `anchor`'s nearest items that ended at `floor` (-inf: a list
        shorter than it was asked for, which any active item enters). With an approximate index (HNSW, IVF) a
        search might not have found an item that scores above the floor; it counts as entering all the same."""
        active = [i for i in item_ids if state.is_active(i)]
        if not active:
            return False
        if floor == -math.inf:
            return True
        return bool((self.scores(state, anchor, state.rows(active)) >= floor - margin(floor)).any())

    def _dated(self) -> tuple[tuple[int, int, int], int]:
        """What a search started now is dated with: the catalogue's (version, vectors version, additions version),
        and the clears."""
        state = self.catalogue.state if self.catalogue is not None else None
        return (_versions(state) if state is not None else (0, 0, 0)), self._cleared

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        """Forget every list (a search running meanwhile does not store its lists)."""
        with self._lock:
            self._cleared += 1
            self._cache.clear()

    def fill(self, item_ids: Sequence[str], search: Search, batch_size: int = 1024) -> int:
        """Compute and store the lists of `item_ids` (batched searches); returns how many are stored."""
        item_ids = list(item_ids)[: self._cache.maxsize]
        for start in range(0, len(item_ids), batch_size):
            chunk = item_ids[start:start + batch_size]
            dated = self._dated()
            self._store(chunk, *search(chunk), dated=dated)
        return len(self)

    def _store(self, item_ids: Sequence[str], ids: list[list[str]], scores: list[list[float]],
               dated: tuple[tuple[int, int, int], int]) -> None:
        versions, cleared = dated
        with self._lock:
            if self._cleared != cleared:  # cleared during the search
                return
            for item_id, row_ids, row_scores in zip(item_ids, ids, scores):
                self._cache[item_id] = (versions, np.array(row_ids, dtype=object),
                                        np.asarray(row_scores, dtype=np.float32), len(row_ids) >= self.depth)

    def _up_to_date(self, anchor: str, entry: tuple) -> tuple | None:
        """`entry` brought up to the catalogue's current version (and stored so), or None when its list has to be
        searched again (see the module docstring). An entry is ((version, vectors version, additions version), ids,
        scores, full): full when the search found `depth` items (else the list held every item it could return)."""
        if self.catalogue is None:
            return entry
        (version, vectors_version, additions_version), ids, scores, full = entry
        state = self.catalogue.state
        if version == state.version or additions_version == state.additions_version:
            return entry  # nothing added, activated or replaced since: what left, the read drops
        touched = self.catalogue.ids_touched_since(version, state.version)
        if touched is None:
            return None
        if touched:
            moved = self.catalogue.ids_changed_since(vectors_version, state.vectors_version)
            if moved is None or anchor in moved:
                return None
            found = self._with_changes(state, anchor, ids, scores, full, touched, moved)
            if found is None:
                return None
            if found is not ids:
                ids, scores, full = found
                self.updated += 1
        dated = (_versions(state), ids, scores, full)
        with self._lock:
            if self._cache.get(anchor) is entry:
                self._cache[anchor] = dated
        return dated

    def _with_changes(self, state: CatalogueState, anchor: str, ids: np.ndarray, scores: np.ndarray, full: bool,
                      touched: frozenset, moved: frozenset) -> tuple[np.ndarray, np.ndarray, bool] | np.ndarray | None:
        """The list (`ids`, `scores`, `full`) with the `touched` items (`moved`: those with a new vector) that are
        active in `state` scored and placed; `ids` itself when none changes it; None when it has to be searched
        again. A list that held every item grows with the additions until it is `depth` long, and is then full.

        A full list is the top of the ranking: every item outside it scores at most its last score (`floor`). An
        item that now scores above the floor is placed in it; an item of the list whose new score falls below the
        floor, or that got a new vector and is out of stock, leaves it, and the list is one shorter (the item after
        the last is unknown). A score too near the floor to tell sends the list to a new search."""
        floor = float(scores[-1]) if full and len(scores) else -math.inf
        near = margin(floor) if full else 0.0
        items = list(touched)
        rows = state.rows(items)
        present = rows >= 0
        active = present & (state.flags[np.where(present, rows, 0)] == 0)
        unscored = [i for i, out in zip(items, present & ~active) if out and i in moved]
        if not active.any() and not unscored:  # stock-outs and deletions only: the read drops them
            return ids
        member = {i: n for n, i in enumerate(ids) if i in touched}
        kept = np.ones(len(ids), bool)
        for item in unscored:
            if item in member:
                kept[member[item]] = False  # a new vector, out of stock: it leaves (scored when it is back)
        # a member's stock change leaves its score as it was: only new vectors and items from outside are scored
        scored = [n for n in np.flatnonzero(active) if items[n] != anchor and (items[n] not in member or
                                                                             items[n] in moved)]
        if not scored and kept.all():
            return ids
        changed = [items[n] for n in scored]
        new = self.scores(state, anchor, rows[scored])
        rescored = scores.copy()
        added_ids, added_scores = [], []
        for item, score in zip(changed, new.tolist()):
            if full and abs(score - floor) <= near:
                return None  # too near the floor to tell
            if item in member:
                rescored[member[item]] = score
                kept[member[item]] = score > floor
            elif score > floor:
                added_ids.append(item)
                added_scores.append(score)
        # a replaced member is on a new catalogue row: it may move among the items it ties even at the same score
        if not added_ids and kept.all() and not any(item in member for item in changed):
            return ids
        ids = np.concatenate([ids[kept], np.array(added_ids, dtype=object)])
        scores = np.concatenate([rescored[kept], np.asarray(added_scores, np.float32)])
        keep = ordered(state, ids, scores)[: self.depth]
        return ids[keep], scores[keep], full or len(ids) > self.depth

    def top(self, item_id: str, k: int, exclude: Collection[str], is_active: Callable[[str], bool],
            search: Search) -> tuple[list[str], list[float]] | None:
        """The first k cached neighbours of `item_id` that are active and not excluded; None when k is deeper than
        the cache or too few survive the filters (the caller searches instead). A list that changes shortened
        below `depth` is searched again when too few of it survive."""
        if k > self.depth:
            return None
        with self._lock:
            entry = self._cache.get(item_id)
        if entry is not None:
            entry = self._up_to_date(item_id, entry)
        if entry is not None:
            picked = _first(entry, k, exclude, is_active)
            if picked is not None or len(entry[1]) >= self.depth or not entry[3]:
                self.hits += 1
                return picked
        self.misses += 1
        dated = self._dated()
        self._store([item_id], *search([item_id]), dated=dated)
        with self._lock:
            entry = self._cache.get(item_id)
        if entry is None:  # maxsize 0, or cleared meanwhile: the caller searches
            return None
        return _first(entry, k, exclude, is_active)


def _first(entry: tuple, k: int, exclude: Collection[str], is_active: Callable[[str], bool]
           ) -> tuple[list[str], list[float]] | None:
    """The first k items of a cached list that are active and not excluded; None when fewer survive of a full list
    (the ones after it are unknown)."""
    _, ids, scores, full = entry
    keep = [n for n, i in enumerate(ids) if i not in exclude and is_active(i)][:k]
    if len(keep) < k and full:
        return None
    return ids[keep].tolist(), scores[keep].tolist()


def _dot(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """`Similarities` of a plain inner product (a cache with no index: the catalogue's vectors as they are)."""
    return vectors @ query


def _versions(state: CatalogueState) -> tuple[int, int, int]:
    return state.version, state.vectors_version, state.additions_version
