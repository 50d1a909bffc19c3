"""Applying the event store's catalogue changes to a recommender's catalogue: the same function for a worker
catching up, a bundle being loaded (the whole log replayed before it serves) and a batch job.

A run of changes is folded first (the last word per item wins: an upsert re-activates, a deletion drops what
came before), then applied as at most four catalogue changes: one upsert of every new or changed item, one
deletion, one activation and one deactivation. An upsert's vector is used as stored when it was computed in
this bundle's item space; otherwise the record is encoded again with this bundle's item tower."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.catalogue import Catalogue
from recsys.catalogue_state import CatalogueState
from recsys.store import Change

logger = logging.getLogger("recsys.changes")

Encode = Callable[[Sequence[Mapping]], np.ndarray]
"""item records → vectors through the bundle's item tower (`ItemTower.encode_items`: an item the towers were trained
on keeps its ID block)."""


@dataclass
class Folded:
    """The net effect of a run of changes."""

    upserts: dict[str, Change] = field(default_factory=dict)  # insertion order: the order of the last upserts
    active: dict[str, bool] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    bundle: str | None = None  # the last bundle swapped in by any worker
    last_seq: int = 0


def fold(changes: Iterable[Change]) -> Folded:
    """The net effect of `changes` (in seq order)."""
    out = Folded()
    for change in changes:
        out.last_seq = max(out.last_seq, change.seq)
        item = change.item_id
        if change.kind == "bundle":
            out.bundle = (change.record or {}).get("path")
        elif change.kind == "upsert":
            out.upserts.pop(item, None)
            out.upserts[item] = change
            out.active.pop(item, None)
            out.deleted.discard(item)
        elif change.kind == "delete":
            out.upserts.pop(item, None)
            out.active.pop(item, None)
            out.deleted.add(item)
        elif change.kind == "active" and item not in out.deleted:
            out.active[item] = bool(change.active)
    return out


@dataclass(frozen=True)
class Applied:
    """What `apply_changes` did (for logs and tests)."""

    upserted: int = 0
    reencoded: int = 0
    skipped: tuple[str, ...] = ()
    deleted: int = 0
    activated: int = 0
    deactivated: int = 0

    def __str__(self) -> str:
        """What happened in words, e.g. "2 upserted (1 encoded again), 1 deleted" ("nothing" when nothing)."""
        parts = [f"{self.upserted:,} upserted" + (f" ({self.reencoded:,} encoded again)" if self.reencoded else "")
                 if self.upserted else "",
                 f"{len(self.skipped):,} skipped (another item space)" if self.skipped else "",
                 *(f"{n:,} {what}" for n, what in ((self.deleted, "deleted"), (self.activated, "activated"),
                                                   (self.deactivated, "deactivated")) if n)]
        return ", ".join(p for p in parts if p) or "nothing"


def served_vectors(state: CatalogueState, records: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """The served vectors of the records' items whose text the catalogue already holds: an upsert that changes an
    item's attributes only (or nothing) keeps the vector it is served with, so an item the towers trained on keeps
    its ID block instead of becoming a text-only item."""
    kept = {}
    for record in records:
        row = state.position.get(record["item_id"])
        if row is not None and state.records[row].get("text") == record.get("text"):
            kept[record["item_id"]] = np.array(state.vectors[row], dtype=np.float32)
    return kept


def is_served_as(state: CatalogueState, record: Mapping) -> bool:
    """True when the catalogue serves the record's item with this text and these attributes (the catalogue's
    columns; one the record leaves out counts as empty): upserting it would change nothing but its stock."""
    row = state.position.get(record["item_id"])
    if row is None:
        return False
    served = state.records[row]
    return all(record.get(key) == value for key, value in served.items() if key != "item_id")


def apply_changes(catalogue: Catalogue, changes: Iterable[Change] | Folded, space: str | None,
                  encode: Encode | None = None) -> Applied:
    """Apply catalogue changes to `catalogue` (whose vectors live in the item space `space`). Upserts from
    another space are encoded again with `encode`; without it (or when it fails) they are skipped and logged."""
    folded = changes if isinstance(changes, Folded) else fold(changes)
    records, vectors, foreign, skipped = [], [], [], []
    for item_id, change in folded.upserts.items():
        usable = change.vector is not None and len(change.vector) == catalogue.dim and (
            change.space is None or space is None or change.space == space)
        if usable:
            records.append(change.record)
            vectors.append(change.vector)
        else:
            foreign.append(change)
    kept = served_vectors(catalogue.state, [c.record for c in foreign]) if foreign else {}
    records += [c.record for c in foreign if c.item_id in kept]  # text unchanged: this bundle's own vector
    vectors += [kept[c.item_id] for c in foreign if c.item_id in kept]
    foreign = [c for c in foreign if c.item_id not in kept]
    if foreign and encode is not None:
        try:
            encoded = encode([c.record for c in foreign])
            records += [c.record for c in foreign]
            vectors += list(np.asarray(encoded, dtype=np.float32))
        except Exception as exc:  # a bundle without a text path: say so, keep the rest
            logger.warning("cannot encode %d upserted item(s) from another item space: %s", len(foreign), exc)
            skipped = [c.item_id for c in foreign]
    elif foreign:
        skipped = [c.item_id for c in foreign]
    if skipped:
        logger.warning("upserted items not applied (their vectors come from another item space): %s", skipped[:10])
    if records:
        catalogue.upsert(records, np.stack(vectors))
    deleted = catalogue.remove(folded.deleted, missing_ok=True) if folded.deleted else 0
    on = [i for i, a in folded.active.items() if a]
    off = [i for i, a in folded.active.items() if not a]
    activated = catalogue.set_active(on, True, missing_ok=True) if on else 0
    deactivated = catalogue.set_active(off, False, missing_ok=True) if off else 0
    return Applied(len(records), len(foreign) - len(skipped), tuple(skipped), deleted, activated, deactivated)


__all__ = ["fold", "Folded", "apply_changes", "Applied", "Encode", "served_vectors", "is_served_as"]
