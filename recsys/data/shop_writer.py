"""Write the synthetic shop straight to a dataset directory, one chunk of users at a time: memory stays bounded
by one chunk (100,000 users, ~1M interactions) whatever the size, so 1M users and 10M events fit a laptop.

The directory is the same as `Dataset.save` writes for `generate_shop` with the same arguments (same rows, same
schema.json and fingerprint), so every command reads it as usual."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys.data.dataset import Fingerprint, ImportReport, write_schema
from recsys.data.shop_catalogue import build_catalogue
from recsys.data.synthetic import CHUNK_USERS, Behaviour, behaviour_for_events, iter_interactions

SHOP_NAME = "synthetic-shop"


def write_shop(directory: str | Path, n_users: int, n_items: int, seed: int = 0, *, n_events: int | None = None,
               chunk_users: int = CHUNK_USERS, progress: bool = False) -> dict:
    """Generate the seeded shop into `directory` (created; must be empty): items.parquet, interactions.parquet
    (one row group per chunk of users) and schema.json. `n_events` sets the mean sequence length so the shop has
    about that many interactions (`synthetic.behaviour_for_events`). Returns the dataset summary."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    behaviour = behaviour_for_events(n_users, n_events) if n_events is not None else Behaviour()
    catalogue = build_catalogue(n_items, np.random.default_rng([seed, 0]))
    catalogue.items.write_parquet(directory / "items.parquet")
    digest = Fingerprint(catalogue.items)
    n_interactions = users = 0
    schema = None
    writer: pq.ParquetWriter | None = None
    try:
        with tqdm(total=n_users, desc="generating users", unit="user",
                  unit_scale=n_users >= 10_000, disable=not progress) as bar:  # (scaled, 1 user read "1.00")
            for chunk in iter_interactions(catalogue, n_users, seed, behaviour, chunk_users=chunk_users):
                table = chunk.to_arrow()
                if writer is None:
                    schema = chunk.schema
                    writer = pq.ParquetWriter(directory / "interactions.parquet", table.schema, compression="zstd")
                writer.write_table(table)
                digest.add(chunk)
                n_interactions += chunk.height
                users += chunk["user_id"].n_unique()  # chunks hold disjoint users
                bar.update(min(chunk_users, n_users - bar.n))
    finally:
        if writer is not None:
            writer.close()
    report = ImportReport(rows_read={"synthetic": n_interactions},
                          notes=[f"synthetic shop, seed={seed}: not real shoppers or products"
                                 + (f"; sequence lengths set for ~{n_events:,} events" if n_events else "")])
    summary = {"name": SHOP_NAME, "n_items": catalogue.items.height, "n_users": users,
               "n_interactions": n_interactions, "has_split": False}
    write_schema(directory, summary, catalogue.items.schema, schema, digest.hexdigest(), report)
    return summary
