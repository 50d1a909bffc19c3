"""`recsys serve`'s check that the event store is this shop's: the default `RECSYS_STATE_DIR`, ./recsys-state, is
shared by every bundle served from one directory, and a store of another shop's catalogue changes was replayed into
the bundle (its products upserted into this catalogue, encoded again and recommended)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from api.settings import Settings
from recsys.errors import StoreError
from recsys.store import EventStore
from recsys.text_format import counted

FOREIGN_AT_LEAST = 3
"""Stock changes and deletions of unknown items it takes to call a store another shop's (a retrained bundle may have
dropped an item or two that the store deactivated)."""


def check_same_shop(store: EventStore, bundle: Path, settings: Settings) -> None:
    """StoreError (one line naming the setting) when none of the items the store's catalogue changes name is in the
    bundle's catalogue and at least `FOREIGN_AT_LEAST` of its (de)activations and deletions are of items neither
    there nor upserted through the store: the store holds another shop's catalogue."""
    changes = store.changes()
    upserted = {change.item_id for change in changes if change.kind == "upsert"}
    stocked = {change.item_id for change in changes if change.kind in ("active", "delete")}
    if len(stocked - upserted) < FOREIGN_AT_LEAST:
        return
    ids = pl.read_parquet(bundle / "embeddings" / "items.parquet", columns=["item_id"])["item_id"].cast(pl.Utf8)
    catalogue = set(ids.to_list())
    if (upserted | stocked) & catalogue:
        return
    foreign = sorted(stocked - upserted)
    redis = settings.event_store == "redis"  # (its URL is not shown: it may carry a password)
    setting, where = ("RECSYS_REDIS_URL", "in Redis") if redis else ("RECSYS_STATE_DIR", f"in {settings.state_dir}")
    raise StoreError(f"{setting}: the event store {where} holds another shop's catalogue: none of the "
                     f"{counted(len(upserted | stocked), 'item')} its changes name is in this bundle's catalogue (e.g. "
                     f"{foreign[0]!r}, deactivated or deleted there); give each shop its own {setting}")
