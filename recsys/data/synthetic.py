"""A seeded, fully synthetic shop: the project's embedded default data for the quickstart and tests.

Nothing here comes from real shoppers or real products (the catalogue: `recsys.data.shop_catalogue`). The
generator plants the habits of real shops, which a text-aware sequential model can learn and a popularity list
cannot:

- **complements**: after a main product (camera, laptop, running shoes, coffee maker, tent) users often buy one
  of its accessories, and after that accessory often another one for the same main product;
- **brand loyalty**: a complement is usually of the main product's brand, and each user has a favourite brand per
  department that they return to with a personal probability;
- **price bands**: each user shops mostly in one band (budget, mid-range, premium; the band is a word of the item
  text), and accessories follow the band of their main product;
- **browsing**: users often look at several items of one category in a row;
- **tastes and a long tail**: 1-3 favourite categories per user; item popularity is Zipf-like.

Users are generated in chunks, vectorised with numpy over the users of a chunk (one loop over the positions of
their sequences, at most `max_interactions`): `iter_interactions` yields one interaction frame per chunk, so a
large shop can be streamed to Parquet chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

from recsys.config import FrozenModel
from recsys.data.dataset import Dataset, ImportReport
from recsys.data.shop_catalogue import BRAND_NAMES, BRANDS, CATEGORIES, CATEGORY_NAMES, DEPARTMENTS, TIERS, \
    ShopCatalogue, build_catalogue

START_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z
DAY = 86_400
CHUNK_USERS = 100_000
TIER_SHARES = (0.45, 0.4, 0.15)  # users per price band


class Behaviour(FrozenModel):
    """The planted habits (probabilities per step of a user's sequence)."""

    min_interactions: int = 3
    max_interactions: int = 30
    length_p: float = 1 / 8  # sequence length = min(max, min - 1 + Geometric(length_p)): mean ≈ 9.8 by default
    accessory_prob: float = 0.55  # right after a main product: one of its accessories (half that after an accessory)
    same_brand_prob: float = 0.8  # a complement of the main product's brand
    repeat_prob: float = 0.25  # browsing: the same category as the last item
    taste_prob: float = 0.75  # otherwise one of the user's categories (else wherever popularity pulls)
    band_prob: float = 0.8  # in the user's (or the main product's) price band


class _Sampler:
    """Popularity-weighted item draws for many rows at once. Items are sorted by (category, tier, brand), so every
    (category), (category, tier) and (category, tier, brand) group is one contiguous run of one cumulative sum."""

    def __init__(self, catalogue: ShopCatalogue) -> None:
        self.n_brands, self.n_tiers = len(BRAND_NAMES), len(TIERS)
        key = (catalogue.category * self.n_tiers + catalogue.tier) * self.n_brands + catalogue.brand
        self.order = np.argsort(key, kind="stable")
        self.levels = [key[self.order] // div for div in (1, self.n_brands, self.n_brands * self.n_tiers)]
        self.cum = np.cumsum(catalogue.weight[self.order])

    def draw(self, rng: np.random.Generator, category: np.ndarray, tier: np.ndarray, brand: np.ndarray) -> np.ndarray:
        """One item per row: within (category, tier, brand) when brand >= 0 and that group has items, else within
        (category, tier), else within the category; anywhere when category < 0."""
        n = len(category)
        lo, hi = np.zeros(n, dtype=np.int64), np.full(n, len(self.order), dtype=np.int64)
        found = category < 0
        wanted = (((category * self.n_tiers + tier) * self.n_brands + brand, brand >= 0),
                  (category * self.n_tiers + tier, True), (category, True))
        for keys, (query, usable) in zip(self.levels, wanted):
            left, right = np.searchsorted(keys, query, "left"), np.searchsorted(keys, query, "right")
            take = ~found & usable & (right > left)
            lo[take], hi[take] = left[take], right[take]
            found |= take
        base = np.where(lo > 0, self.cum[lo - 1], 0.0)
        target = base + rng.random(n) * (self.cum[hi - 1] - base)
        return self.order[np.clip(np.searchsorted(self.cum, target, side="right"), lo, hi - 1)]


class _Tables:
    """Per-category lookups as arrays: department, accessories (-1 padded), brands of the department."""

    def __init__(self) -> None:
        dept_of = {c: DEPARTMENTS.index(CATEGORIES[c].dept) for c in CATEGORY_NAMES}
        self.dept = np.array([dept_of[c] for c in CATEGORY_NAMES])
        width = max(len(spec.accessories) for spec in CATEGORIES.values())
        self.accessories = np.full((len(CATEGORY_NAMES), width), -1)
        for i, spec in enumerate(CATEGORIES.values()):
            self.accessories[i, : len(spec.accessories)] = [CATEGORY_NAMES.index(a) for a in spec.accessories]
        self.n_accessories = (self.accessories >= 0).sum(axis=1)
        sizes = np.array([len(BRANDS[d]) for d in DEPARTMENTS])
        self.brand_start, self.n_brands = np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes
        first_weight = np.where(self.n_accessories > 0, 2.0, 1.0)  # tastes lean to main products
        self.log_taste = np.log(first_weight / first_weight.sum())


def _user_sequences(catalogue: ShopCatalogue, sampler: _Sampler, tables: _Tables, behaviour: Behaviour,
                    n_users: int, rng: np.random.Generator, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user position in the chunk, item row, timestamp) per interaction, user by user, oldest first."""
    b, rows = behaviour, np.arange(n_users)
    lengths = np.minimum(b.max_interactions, b.min_interactions + rng.geometric(b.length_p, n_users) - 1)
    tastes = np.argsort(-(tables.log_taste + rng.gumbel(size=(n_users, len(CATEGORY_NAMES)))), axis=1)[:, :3]
    n_tastes = rng.integers(1, 4, n_users)
    band = rng.choice(len(TIERS), n_users, p=TIER_SHARES)
    favourite = tables.brand_start + (rng.random((n_users, len(DEPARTMENTS))) * tables.n_brands).astype(np.int64)
    loyalty = rng.beta(2.0, 2.0, n_users)
    clock = start + rng.integers(0, 180 * DAY, n_users)
    last = np.full(n_users, -1)
    anchor = np.full(n_users, -1)  # the main product whose accessories come next (-1: none)
    steps = int(lengths.max())
    items, stamps = np.empty((steps, n_users), dtype=np.int64), np.empty((steps, n_users), dtype=np.int64)
    for t in range(steps):
        has_anchor, anchor_row = anchor >= 0, np.maximum(anchor, 0)
        anchor_cat, last_cat = catalogue.category[anchor_row], catalogue.category[np.maximum(last, 0)]
        p_complement = np.where(has_anchor, np.where(last == anchor, b.accessory_prob, b.accessory_prob / 2), 0.0)
        r = rng.random(n_users)
        complement = r < p_complement
        browse = (last >= 0) & ~complement & (r < p_complement + b.repeat_prob)
        use_taste = rng.random(n_users) < b.taste_prob
        accessory = tables.accessories[anchor_cat, (rng.random(n_users) * tables.n_accessories[anchor_cat]).astype(int)]
        taste = tastes[rows, (rng.random(n_users) * n_tastes).astype(int)]
        category = np.where(complement, accessory, np.where(browse, last_cat, np.where(use_taste, taste, -1)))
        safe_cat = np.maximum(category, 0)
        brand = np.where(rng.random(n_users) < loyalty, favourite[rows, tables.dept[safe_cat]], -1)
        brand = np.where(complement & (rng.random(n_users) < b.same_brand_prob), catalogue.brand[anchor_row], brand)
        own_band = np.where(complement, catalogue.tier[anchor_row], band)
        tier = np.where(rng.random(n_users) < b.band_prob, own_band, rng.integers(0, len(TIERS), n_users))
        item = sampler.draw(rng, category, tier, brand)
        again = item == last  # look for another item once
        if again.any():
            item[again] = sampler.draw(rng, category[again], tier[again], brand[again])
        gap = rng.exponential(1.0, n_users) * np.where(complement, DAY, np.where(browse, DAY / 2, 6 * DAY))
        clock = clock + 60 + gap.astype(np.int64)
        items[t], stamps[t] = item, clock
        is_main = tables.n_accessories[catalogue.category[item]] > 0
        anchor = np.where(is_main, item, np.where(complement, anchor, -1))
        last = item
    kept = np.arange(steps)[None, :] < lengths[:, None]  # [user, step]
    return np.repeat(rows, lengths), items.T[kept], stamps.T[kept]


def mean_length(behaviour: Behaviour) -> float:
    """Expected interactions per user: (min - 1) + E[min(Geometric(p), max - min + 1)]."""
    p, span = behaviour.length_p, behaviour.max_interactions - behaviour.min_interactions + 1
    return behaviour.min_interactions - 1 + (1 - (1 - p) ** span) / p


def behaviour_for_events(n_users: int, n_events: int, behaviour: Behaviour = Behaviour()) -> Behaviour:
    """`behaviour` with the length distribution set so that `n_users` users make about `n_events` interactions
    (the geometric parameter solved for the mean; `max_interactions` raised to 4× the mean when the mean is above
    the middle of the min-max range)."""
    mean = n_events / n_users
    if mean < behaviour.min_interactions:
        raise ValueError(f"{n_events:,} events for {n_users:,} users is {mean:.2f} per user, below the minimum of "
                         f"{behaviour.min_interactions} per user: ask for more events or fewer users")
    longest = behaviour.max_interactions
    if mean > (behaviour.min_interactions + longest) / 2:
        longest = int(np.ceil(4 * mean))
    lo, hi = 1e-6, 1.0
    for _ in range(100):  # mean_length falls as p grows
        p = (lo + hi) / 2
        lo, hi = (p, hi) if mean_length(behaviour.model_copy(update={"length_p": p, "max_interactions": longest})) \
            > mean else (lo, p)
    return behaviour.model_copy(update={"length_p": (lo + hi) / 2, "max_interactions": longest})


def iter_interactions(catalogue: ShopCatalogue, n_users: int, seed: int = 0, behaviour: Behaviour = Behaviour(),
                      start: int = START_2024, chunk_users: int = CHUNK_USERS) -> Iterator[pl.DataFrame]:
    """Interaction frames (user_id, item_id, timestamp) for users 1..n_users, `chunk_users` at a time (user by
    user, oldest first); chunk c draws from its own seeded stream, so a chunk never depends on the ones before."""
    sampler, tables = _Sampler(catalogue), _Tables()
    width = max(5, len(str(n_users)))
    item_ids = catalogue.items["item_id"]
    for chunk, first in enumerate(range(0, n_users, chunk_users)):
        size = min(chunk_users, n_users - first)
        users, rows, stamps = _user_sequences(catalogue, sampler, tables, behaviour, size,
                                              np.random.default_rng([seed, 1, chunk]), start)
        user_ids = pl.Series("user_id", users + first + 1).cast(pl.Utf8).str.zfill(width)
        yield pl.DataFrame({"user_id": "U" + user_ids, "item_id": item_ids.gather(rows),
                            "timestamp": pl.Series(stamps, dtype=pl.Int64)})


def generate_shop(n_users: int = 600, n_items: int = 900, seed: int = 0, *, min_interactions: int = 3,
                  max_interactions: int = 30, zipf_exponent: float = 0.9, behaviour: Behaviour | None = None,
                  start: int = START_2024, name: str = "synthetic-shop") -> Dataset:
    """Generate the synthetic shop (deterministic for a given seed): items with title/category/brand/price and
    text "title. category. brand. range: <price band>, attributes"; users whose sequences follow the planted
    habits of the module docstring (complements, brand loyalty, price bands, browsing, tastes, a long tail);
    `min_interactions`-`max_interactions` interactions per user with increasing epoch-second timestamps from
    2024-01-01."""
    if n_items < 2 * len(CATEGORIES) or n_users < 1 or not 1 <= min_interactions <= max_interactions:
        raise ValueError(f"need n_items >= {2 * len(CATEGORIES)}, n_users >= 1 and "
                         f"1 <= min_interactions <= max_interactions")
    if not (isinstance(zipf_exponent, (int, float)) and 0 <= zipf_exponent < float("inf")):  # nan fails too
        raise ValueError(f"zipf_exponent must be a finite number >= 0 (0: every item equally popular), got "
                         f"{zipf_exponent!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    behaviour = (behaviour or Behaviour()).model_copy(update={"min_interactions": min_interactions,
                                                              "max_interactions": max_interactions})
    catalogue = build_catalogue(n_items, np.random.default_rng([seed, 0]), zipf_exponent)
    interactions = pl.concat(iter_interactions(catalogue, n_users, seed, behaviour, start))
    report = ImportReport(rows_read={"synthetic": interactions.height},
                          notes=[f"synthetic shop, seed={seed}: not real shoppers or products"])
    return Dataset(name, catalogue.items, interactions, report)
