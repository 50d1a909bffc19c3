"""The catalogue: one versioned object that holds every item's row, id, state, metadata, vector and the
re-ranker's per-item arrays. The index, the user towers, the feature builder and the caches reference it;
nothing keeps its own copy.

Rows are append-only: an upsert appends a row (a replaced item's old row becomes a tombstone), a deletion
tombstones the row, a deactivation flags it, and `compact()` drops tombstones for good (rows renumbered).
Every change is one `CatalogueState` built aside and published under the write lock with a new `version`,
so a reader that takes `catalogue.state` once sees one consistent catalogue; derived caches key on
`version` (anything that depends on the rows or flags) or `vectors_version` (anything that depends only on
which vector each live id has: upserts, deletions and compaction-free changes of the id → vector map); tables
per row extend themselves with the rows appended since while `lineage` (renewed by each compaction) is the same.
Searches hold the read lock, so the FAISS structure (a `RowListener`) and the published state always agree.

The parts, each in its own module: a version (`recsys.catalogue_state`), the row storage versions share
(`recsys.append_only`), their id → row maps (`recsys.positions`), which ids the latest changes touched
(`recsys.change_log`) and a compaction's rows (`recsys.compaction`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from recsys.append_only import AppendOnly
from recsys.catalogue_state import (CATALOGUE_COLUMNS, DESCRIPTIVE_COLUMNS, FILTER_COLUMNS, INACTIVE, REMOVED,
                                    CandidateRows, CatalogueState, objects)
from recsys.change_log import ChangeLog
from recsys.compaction import KeptRows
from recsys.errors import UnknownIdError
from recsys.positions import changed as changed_positions
from recsys.retrieval.filters import RWLock

if TYPE_CHECKING:
    from recsys.item_arrays import ItemArrays

COMPACT_SHARE = 0.10
"""`Catalogue.needs_compaction()`: more than this share of rows are tombstones."""
MAX_CHUNKS = 32  # an upsert appends a chunk to the metadata frame: past this many, they are joined (`_few_chunks`)


class RowListener(Protocol):
    """A structure over catalogue rows that must change with them (the FAISS index)."""

    def rows_added(self, vectors: np.ndarray) -> None:
        """Append rows (vectors in row order), called under the catalogue's write lock."""

    def compacted(self, keep: np.ndarray, rows: int,
                  reading: Callable[[], AbstractContextManager]) -> Callable[[Sequence[np.ndarray]], None]:
        """Build a copy holding only rows `keep` (ascending, all below `rows`; renumbered 0..len-1). Called with no
        catalogue lock held: searches and edits go on meanwhile, `rows_added` included, so every read of the
        structure must sit inside `reading()` (short ones: an edit waits for the one under way); its first `rows`
        rows never change. Return the install, which the catalogue runs under its write lock with the vector
        batches appended since (in order, each as `rows_added` got it): it appends them to the copy and swaps the
        copy in."""


def _few_chunks(items: pl.DataFrame) -> pl.DataFrame:
    """`items` in few chunks: its first chunk kept and the rows after it joined into one, or, once those rows are
    an eighth of the first chunk, every row in one chunk (so an upsert's share of the copying stays small)."""
    head = items.get_column(items.columns[0]).chunk_lengths()[0]
    if head < 8 * (items.height - head):
        return items.rechunk()
    return pl.concat([items.slice(0, head), items.slice(head).rechunk()], how="vertical", rechunk=False)


def _frame_rows(records: Sequence[Mapping[str, Any]], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`records` as rows of a frame with exactly `schema` (keys outside it dropped, missing ones null)."""
    columns = {name: [r.get(name) for r in records] for name in schema}
    return pl.DataFrame(columns, schema={name: dtype for name, dtype in schema.items()}, strict=False)


class Catalogue:
    """The mutable holder of the current `CatalogueState` (see the module docstring).

    Writers (`upsert`, `set_active`, `remove`, `compact`) are serialised; each publishes one new state
    under the write lock (FAISS rows change in the same critical section). A compaction builds its rows and index
    aside while the others go on, and only its swap (which replays them) is serialised with them. Readers take
    `state` once."""

    def __init__(self, items: pl.DataFrame, vectors: np.ndarray | AppendOnly, flags: np.ndarray | None = None) -> None:
        """`vectors`: one row per item, or the storage holding them (kept as it is: `AppendOnly.read_npy` loads
        them with room for the first upserts)."""
        store = vectors if isinstance(vectors, AppendOnly) else None
        if store is not None and store.view().dtype != np.float32:  # kept only as float32 rows: converted instead
            store, vectors = None, store.view()
        vectors = store.view() if store is not None else np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != items.height:
            raise ValueError(f"{vectors.shape} vectors for {items.height} catalogue rows")
        if "item_id" not in items.columns:
            raise ValueError("the catalogue frame needs an item_id column")
        ids = np.asarray(items["item_id"].to_list(), dtype=object)
        flags = np.zeros(len(ids), np.uint8) if flags is None else np.asarray(flags, np.uint8).copy()
        if len(flags) != len(ids):
            raise ValueError(f"{len(flags)} state flags for {len(ids)} rows")
        live = np.flatnonzero((flags & REMOVED) == 0)
        position = dict(zip(ids[live].tolist(), live.tolist()))
        if len(position) != len(live):
            raise ValueError("catalogue item ids must be unique")
        self._vectors = store if store is not None else AppendOnly(vectors)
        self._ids = AppendOnly(ids)
        self._records: AppendOnly | None = None    # the latest records view's storage, once one was built
        self._state = CatalogueState(0, 0, self._ids.view(), flags, position, items, self._vectors.view())
        self._writer = threading.Lock()   # one change at a time (a compaction's swap included)
        self._lock = RWLock()             # searches (read) vs publishing a change (write)
        self._listeners: list[weakref.ref] = []
        self._compaction = threading.Lock()        # one compaction at a time
        self._appended: list[tuple[int, int]] | None = None  # while one builds: the row ranges upserts appended
        self._features_set = 0                     # `attach_features` calls (a compaction replays appends only)
        self._changes = ChangeLog()                # which ids the latest changes touched (ids_changed_since)

    @classmethod
    def from_frame(cls, items: pl.DataFrame, vectors: np.ndarray) -> "Catalogue":
        """A catalogue of a dataset's items (its `CATALOGUE_COLUMNS`), rows aligned with `vectors`."""
        return cls(items.select([c for c in CATALOGUE_COLUMNS if c in items.columns]), vectors)

    @classmethod
    def from_ids(cls, ids: Sequence[Any], vectors: np.ndarray,
                 attributes: pl.DataFrame | Mapping[str, Any] | None = None) -> "Catalogue":
        """A bare catalogue (ids + optional filter attributes), e.g. for a standalone `VectorIndex`."""
        frame = pl.DataFrame({"item_id": list(ids)})
        if attributes is not None:
            extra = attributes if isinstance(attributes, pl.DataFrame) else pl.DataFrame(dict(attributes))
            if extra.height != frame.height:
                raise ValueError(f"attributes have {extra.height} rows for {frame.height} items")
            frame = pl.concat([frame, extra], how="horizontal")
        return cls(frame, vectors)

    # ---- reading --------------------------------------------------------------------------------
    @property
    def state(self) -> CatalogueState:
        return self._state

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def vectors_version(self) -> int:
        return self._state.vectors_version

    @property
    def additions_version(self) -> int:
        return self._state.additions_version

    @property
    def dim(self) -> int:
        return self._state.dim

    def __len__(self) -> int:
        return len(self._state)

    @contextmanager
    def reading(self):
        """Hold off changes (searches: the FAISS rows and the state stay in step); yields the state."""
        with self._lock.read():
            yield self._state

    def ids_changed_since(self, vectors_version: int, now: int | None = None) -> frozenset | None:
        """The ids whose vector changed (upserted, replaced, deleted) after `vectors_version` and up to `now`
        (default: the current one); None when that reaches back past the latest `recsys.change_log.KEPT` changes
        or spans one of more than `MAX_IDS` ids. What depends only on some items' vectors (a history's query vector)
        is still valid when none of them is in it."""
        return self._changes.vectors_between(vectors_version, self._state.vectors_version if now is None else now)

    def ids_touched_since(self, version: int, now: int | None = None) -> frozenset | None:
        """The ids any change after catalogue `version` and up to `now` (default: the current one) touched: upserted,
        replaced, deleted, activated or deactivated (a compaction touches none); None as for `ids_changed_since`."""
        return self._changes.between(version, self._state.version if now is None else now)

    def needs_compaction(self, share: float = COMPACT_SHARE) -> bool:
        state = self._state
        return len(state) > 0 and state.n_removed > share * len(state)

    # ---- listeners ----------------------------------------------------------------------------------
    def attach(self, listener: RowListener) -> None:
        """Keep `listener` (held weakly: no reference cycle) in step with appended and compacted rows."""
        with self._writer:
            if all(obj is not listener for obj in self._listeners_alive()):
                self._listeners.append(weakref.ref(listener))

    def _listeners_alive(self) -> list[RowListener]:
        alive = [ref() for ref in self._listeners]
        self._listeners = [ref for ref, obj in zip(self._listeners, alive) if obj is not None]
        return [obj for obj in alive if obj is not None]

    # ---- changes ----------------------------------------------------------------------------------
    def _publish(self, state: CatalogueState, added: np.ndarray | None = None) -> None:
        with self._lock.write():
            if added is not None and len(added):
                for listener in self._listeners_alive():
                    listener.rows_added(added)
            self._state = state

    def upsert(self, records: Sequence[Mapping[str, Any]], vectors: np.ndarray) -> int:
        """Insert or replace items (rows of `vectors` align with `records`; each has an `item_id`): each gets a
        new active row, a replaced item's old row becomes a tombstone. Columns the catalogue frame lacks are
        dropped. Returns the new version."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(records) != len(vectors):
            raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
        ids = [r["item_id"] for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique within one upsert")
        with self._writer:
            old = self._state
            if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != old.dim):
                raise ValueError(f"vectors have dimension {vectors.shape[-1]}, the catalogue {old.dim}")
            if not records:
                return old.version
            start = len(old)
            flags = old.flags.copy()
            flags[[old.position[i] for i in ids if i in old.position]] |= REMOVED
            flags = np.concatenate([flags, np.zeros(len(ids), np.uint8)])
            position = changed_positions(old.position, zip(ids, range(start, start + len(ids))))
            frame = _frame_rows(records, old.items.schema)
            items = pl.concat([old.items, frame], how="vertical_relaxed")
            items = _few_chunks(items) if items.n_chunks() > MAX_CHUNKS else items
            all_vectors = self._vectors.append(vectors)
            features = old.features.appended(frame, vectors) if old.features is not None else None
            self._ids, all_ids = AppendOnly.extended(self._ids, old.ids, np.asarray(ids, dtype=object))
            carried = old.__dict__.get("records")
            if carried is not None:
                self._records, carried = AppendOnly.extended(self._records, carried, objects(frame.to_dicts()))
            state = CatalogueState(old.version + 1, old.vectors_version + 1, all_ids, flags, position, items,
                                   all_vectors, features, carried, old.lineage, old.additions_version + 1)
            self._changes.record(state.version, state.vectors_version, ids, moves_vectors=True)
            self._publish(state, vectors)
            if self._appended is not None:  # a compaction is building: its swap replays these rows onto its copies
                self._appended.append((start, start + len(ids)))
            return state.version

    def _flagged(self, item_ids: Iterable[str], missing_ok: bool, set_bits: int, clear_bits: int = 0) -> int:
        """Set / clear flag bits on the rows of `item_ids`; returns how many rows changed."""
        ids = list(item_ids)
        with self._writer:
            old = self._state
            missing = [i for i in ids if i not in old.position]
            if missing and not missing_ok:
                raise UnknownIdError("item", missing)
            rows = np.asarray([old.position[i] for i in dict.fromkeys(ids) if i in old.position], np.int64)
            flags = old.flags.copy()
            flags[rows] = (flags[rows] & np.uint8(~clear_bits & 0xFF)) | np.uint8(set_bits)
            changed = int((flags != old.flags).sum())
            if not changed:
                return 0
            removed = bool(set_bits & REMOVED)
            touched = old.ids[rows].tolist()
            position = changed_positions(old.position, gone=touched) if removed else old.position
            self._changes.record(old.version + 1, old.vectors_version + int(removed), touched, moves_vectors=removed)
            self._publish(replace(old, version=old.version + 1, vectors_version=old.vectors_version + int(removed),
                                  additions_version=old.additions_version + int(bool(clear_bits & INACTIVE)),
                                  flags=flags, position=position, _records=old.__dict__.get("records")))
            return changed

    def set_active(self, item_ids: Iterable[str], active: bool, *, missing_ok: bool = False) -> int:
        """Reactivate or deactivate (out of stock) items; returns how many changed state."""
        return self._flagged(item_ids, missing_ok, 0 if active else INACTIVE, INACTIVE if active else 0)

    def remove(self, item_ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Delete items (tombstones until `compact`); returns how many."""
        return self._flagged(item_ids, missing_ok, REMOVED)

    def attach_features(self, build: Callable[[CatalogueState], ItemArrays]) -> None:
        """Give the current state the re-ranker's per-item arrays (`build(state)`); later changes extend them."""
        with self._writer:
            old = self._state
            self._features_set += 1
            self._publish(replace(old, features=build(old), _records=old.__dict__.get("records")))

    def compact(self) -> int:
        """Drop the rows tombstoned now for good (rows renumbered). The compacted rows and the listeners' copies (the
        FAISS index) are built aside while searches and edits go on; under the locks, the swap then replays the
        edits that landed meanwhile: rows upserted since are appended to the copies, and every row carried over
        takes its flags of that moment (an item deleted meanwhile stays a tombstone until the next compaction).
        Returns the number of rows reclaimed."""
        with self._compaction:
            with self._writer:
                old = self._state
                keep = np.flatnonzero((old.flags & REMOVED) == 0)
                if len(keep) == len(old):
                    return 0
                listeners, features_set = self._listeners_alive(), self._features_set
                self._appended = []
            try:
                kept = KeptRows.of(old, keep)
                installs = [listener.compacted(keep, len(old), self._lock.read) for listener in listeners]
                with self._writer:
                    now = self._state
                    if sum(end - start for start, end in self._appended) != len(now) - len(old):
                        raise RuntimeError("rows were appended during the compaction without an upsert's record")
                    state = kept.replayed(now, self._appended, self._features_set != features_set)
                    appended = [now.vectors[start:end] for start, end in self._appended]
                    jobs = [(install, appended) for install in installs]
                    rows = np.concatenate([keep, np.arange(len(old), len(now))])
                    jobs += [(listener.compacted(rows, len(now), nullcontext), [])  # attached during the build
                             for listener in self._listeners_alive() if all(listener is not o for o in listeners)]
                    self._changes.record(state.version, state.vectors_version, (), moves_vectors=False)
                    with self._lock.write():
                        for install, batches in jobs:
                            install(batches)
                        self._vectors, self._ids, self._records, self._state = kept.vectors, kept.ids, None, state
                    self._appended = None
            finally:
                if self._appended is not None:  # the build failed: nothing was swapped
                    with self._writer:
                        self._appended = None
            return len(old) - len(keep)


__all__ = ["Catalogue", "CatalogueState", "CandidateRows", "RowListener", "AppendOnly", "REMOVED", "INACTIVE",
           "CATALOGUE_COLUMNS", "FILTER_COLUMNS", "DESCRIPTIVE_COLUMNS", "COMPACT_SHARE"]
