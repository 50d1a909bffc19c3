"""The check that the event store is this shop's, made by `recsys serve` before it starts and by every app
`create_app` builds before it loads its bundle (`uvicorn --factory`, gunicorn): the default `RECSYS_STATE_DIR`,
./recsys-state, is shared by every bundle served from one directory, and a store of another shop's catalogue changes
was replayed into the bundle (its products upserted into this catalogue, encoded again and recommended)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from api.settings import Settings
from recsys.errors import StoreError
from recsys.store import EventStore
from recsys.text_format import counted

FOREIGN_AT_LEAST = 3
"""Unknown items the store must name to be called another shop's (a retrained bundle may have dropped an item or two
that the store deactivated)."""
FIRST_EVENTS = 1_000
"""Events whose items count as evidence too (`EventStore.event_items`: SQLite's first by seq, Redis' first events of
the users one scan step names), read in one pass whatever the store's size."""


def check_same_shop(store: EventStore, bundle: Path, settings: Settings) -> None:
    """StoreError (one line naming the setting) when none of the items the store names (its catalogue changes, and
    its first events) is in the bundle's catalogue and at least `FOREIGN_AT_LEAST` of them are neither there nor
    upserted through the store: the store holds another shop's catalogue."""
    changed = store.changed_items()  # (not `changes`: their vectors are not needed)
    upserted = {item_id for kind, item_id in changed if kind == "upsert"}
    stocked = {item_id for kind, item_id in changed if kind in ("active", "delete")}
    if len(stocked - upserted) < FOREIGN_AT_LEAST:
        return
    seen = set(store.event_items(FIRST_EVENTS))
    ids = pl.read_parquet(bundle / "embeddings" / "items.parquet", columns=["item_id"])["item_id"].cast(pl.Utf8)
    named = upserted | stocked | seen
    if named & set(ids.to_list()):
        return
    foreign = sorted(stocked - upserted)
    redis = settings.event_store == "redis"  # (its URL is not shown: it may carry a password)
    setting, where = ("RECSYS_REDIS_URL", "in Redis") if redis else ("RECSYS_STATE_DIR", f"in {settings.state_dir}")
    raise StoreError(f"{setting}: the event store {where} holds another shop's catalogue: none of the "
                     f"{counted(len(named), 'item')} it names is in this bundle's catalogue (e.g. {foreign[0]!r}, "
                     f"deactivated or deleted there); give each shop its own {setting}")
