"""A seeded, fully synthetic shop: the project's embedded default data for the quickstart and tests.

Nothing here comes from real shoppers or real products. The generator plants structure that a
text-aware sequential model can learn and popularity cannot: after a main product (camera, laptop,
running shoes, coffee maker, tent) users often buy one of its accessories, usually of the same brand;
they browse repeatedly within a category; they have category and brand tastes; item popularity is
Zipf-like. Category and brand are words of every item's text ("title. category. brand. attributes").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data.dataset import Dataset, ImportReport

START_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z
DAY = 86_400

COLOURS = ("black", "silver", "grey", "navy", "red", "green", "white", "blue", "orange", "olive")
BRANDS = {
    "photo": ("Nordvik", "Lumora", "Kestrel", "Aperta"),
    "computing": ("Voltix", "Arcline", "Quanta", "Helio"),
    "running": ("Stridex", "Fleetfoot", "Pacer & Co"),
    "coffee": ("Brewmont", "Crema Verde", "Kaldi Works"),
    "outdoor": ("Ridgeway", "Fjellmark", "Cairnline"),
}

Maker = Callable[[np.random.Generator, str], tuple[str, dict[str, str]]]


def _pick(rng: np.random.Generator, options: tuple) -> str:
    return str(options[int(rng.integers(len(options)))])


def _camera(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    mp, kind, colour = _pick(rng, (20, 24, 26, 33, 45, 61)), _pick(rng, ("Mirrorless", "DSLR", "Compact")), \
        _pick(rng, COLOURS[:3])
    return f"{brand} {mp} MP {kind} Camera, {colour}", {"sensor": f"{mp} MP", "type": kind.lower(), "colour": colour}


def _lens(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    optic = _pick(rng, ("24mm f/2.8", "35mm f/1.8", "50mm f/1.4", "85mm f/1.8", "100mm f/2.8 Macro",
                        "24-70mm f/2.8", "70-200mm f/4", "16-35mm f/4"))
    kind, line = "Zoom" if "-" in optic else "Prime", _pick(rng, ("", "Pro ", "Art ", "Lite "))
    return f"{brand} {line}{optic} {kind} Lens", {"focal length": optic.split()[0], "aperture": optic.split()[1],
                                           "mount": f"{brand} mount"}


def _camera_bag(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    material, style, colour = _pick(rng, ("Canvas", "Nylon", "Leather")), \
        _pick(rng, ("Sling", "Backpack", "Shoulder")), _pick(rng, COLOURS)
    return f"{brand} {material} Camera {style} Bag, {colour}", {"material": material.lower(), "colour": colour}


def _memory_card(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    size, speed = _pick(rng, (64, 128, 256, 512)), _pick(rng, ("V30", "V60", "V90"))
    return f"{brand} {size} GB SD Memory Card, {speed}", {"capacity": f"{size} GB", "speed class": speed}


def _laptop(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    line, size, ram = _pick(rng, ("Air", "Pro", "Studio", "Flex")), _pick(rng, (13, 14, 15, 16)), \
        _pick(rng, (8, 16, 32))
    colour = _pick(rng, COLOURS[:4])
    return f"{brand} {line} {size}-inch Laptop, {ram} GB RAM, {colour}", \
        {"screen": f"{size} inch", "memory": f"{ram} GB", "colour": colour}


def _sleeve(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    size, material, colour = _pick(rng, (13, 14, 15, 16)), _pick(rng, ("Neoprene", "Felt", "Leather")), \
        _pick(rng, COLOURS)
    return f"{brand} {size}-inch {material} Laptop Sleeve, {colour}", \
        {"size": f"{size} inch", "material": material.lower(), "colour": colour}


def _mouse(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    shape, colour = _pick(rng, ("Ergonomic", "Compact", "Silent", "Travel")), _pick(rng, COLOURS[:4])
    return f"{brand} {shape} Wireless Mouse, {colour}", {"connection": "bluetooth", "colour": colour}


def _shoes(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    model, colour, size = _pick(rng, ("Glide", "Tempo", "Trail", "Pace", "Rush")), _pick(rng, COLOURS), \
        _pick(rng, tuple(range(38, 47)))
    surface = "trail" if model == "Trail" else "road"
    return f"{brand} {model} {int(rng.integers(1, 6))} Running Shoes, {colour}, size {size}", \
        {"surface": surface, "colour": colour, "size": str(size)}


def _socks(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    kind, colour, size = _pick(rng, ("Cushioned", "Ankle", "Compression")), _pick(rng, COLOURS), \
        _pick(rng, ("S", "M", "L"))
    return f"{brand} {kind} Running Socks, 3-pack, {colour}, {size}", \
        {"material": "merino blend", "colour": colour, "size": size}


def _bottle(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    volume, colour = _pick(rng, (500, 750, 1000)), _pick(rng, COLOURS)
    return f"{brand} {volume} ml Insulated Water Bottle, {colour}", {"volume": f"{volume} ml", "colour": colour}


def _coffee_maker(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    kind, finish = _pick(rng, ("Drip", "Espresso", "Pour-Over", "French Press", "Moka")), \
        _pick(rng, ("stainless steel", "black", "white", "copper"))
    cups = _pick(rng, (2, 4, 8, 12))
    return f"{brand} {cups}-Cup {kind} Coffee Maker, {finish}", \
        {"type": kind.lower(), "capacity": f"{cups} cups", "finish": finish}


def _beans(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    origin, roast, grams = _pick(rng, ("Ethiopia", "Colombia", "Brazil", "Guatemala", "Kenya", "Sumatra")), \
        _pick(rng, ("light", "medium", "dark")), _pick(rng, (250, 500, 1000))
    return f"{brand} {origin} Coffee Beans, {roast} roast, {grams} g", \
        {"origin": origin, "roast": roast, "weight": f"{grams} g"}


def _grinder(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    kind, colour = _pick(rng, ("Burr", "Conical Burr", "Hand", "Electric Blade")), _pick(rng, COLOURS[:5])
    return f"{brand} {kind} Coffee Grinder, {colour}", {"type": kind.lower(), "colour": colour}


def _tent(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    people, kind, colour = _pick(rng, (1, 2, 3, 4)), _pick(rng, ("Backpacking", "Dome", "Tunnel")), \
        _pick(rng, ("green", "orange", "olive", "grey"))
    return f"{brand} {people}-Person {kind} Tent, {colour}", \
        {"capacity": f"{people} person", "season": _pick(rng, ("3-season", "4-season")), "colour": colour}


def _sleeping_bag(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    temp, fill, shape = _pick(rng, (-10, -5, 0, 5)), _pick(rng, ("down", "synthetic")), \
        _pick(rng, ("Mummy", "Rectangular", "Quilt"))
    return f"{brand} {temp} °C {shape} Sleeping Bag, {fill} fill", {"comfort": f"{temp} °C", "fill": fill}


def _lantern(rng: np.random.Generator, brand: str) -> tuple[str, dict[str, str]]:
    lumen, colour = _pick(rng, (150, 200, 300, 400, 600, 800)), _pick(rng, COLOURS[:6])
    return f"{brand} {lumen} Lumen LED Camping Lantern, {colour}", \
        {"brightness": f"{lumen} lm", "power": "rechargeable", "colour": colour}


@dataclass(frozen=True)
class _Category:
    dept: str
    share: float
    price: tuple[float, float]
    make: Maker
    accessories: tuple[str, ...] = ()


CATEGORIES: dict[str, _Category] = {
    "Cameras": _Category("photo", 0.08, (400, 2500), _camera, ("Lenses", "Camera Bags", "Memory Cards")),
    "Lenses": _Category("photo", 0.08, (150, 1800), _lens),
    "Camera Bags": _Category("photo", 0.05, (30, 180), _camera_bag),
    "Memory Cards": _Category("photo", 0.04, (10, 90), _memory_card),
    "Laptops": _Category("computing", 0.08, (500, 2800), _laptop, ("Laptop Sleeves", "Wireless Mice")),
    "Laptop Sleeves": _Category("computing", 0.05, (15, 80), _sleeve),
    "Wireless Mice": _Category("computing", 0.05, (15, 110), _mouse),
    "Running Shoes": _Category("running", 0.09, (60, 220), _shoes, ("Running Socks", "Water Bottles")),
    "Running Socks": _Category("running", 0.05, (8, 30), _socks),
    "Water Bottles": _Category("running", 0.04, (10, 45), _bottle),
    "Coffee Makers": _Category("coffee", 0.07, (30, 900), _coffee_maker, ("Coffee Beans", "Coffee Grinders")),
    "Coffee Beans": _Category("coffee", 0.08, (6, 40), _beans),
    "Coffee Grinders": _Category("coffee", 0.04, (20, 300), _grinder),
    "Tents": _Category("outdoor", 0.06, (80, 700), _tent, ("Sleeping Bags", "Camping Lanterns")),
    "Sleeping Bags": _Category("outdoor", 0.05, (40, 400), _sleeping_bag),
    "Camping Lanterns": _Category("outdoor", 0.04, (12, 80), _lantern),
}


def _catalogue(n_items: int, rng: np.random.Generator) -> pl.DataFrame:
    names = list(CATEGORIES)
    shares = np.array([CATEGORIES[c].share for c in names])
    counts = np.maximum(1, np.floor(shares / shares.sum() * n_items)).astype(int)
    for i in np.argsort(-shares)[: n_items - counts.sum()]:  # hand out the rounding remainder
        counts[i] += 1
    rows, seen = [], set()
    for name, count in zip(names, counts):
        spec = CATEGORIES[name]
        brands = BRANDS[spec.dept]
        for k in range(count):
            brand = brands[k % len(brands)] if k < len(brands) else _pick(rng, brands)
            for _ in range(12):  # distinct titles, so text tells every item apart
                title, attrs = spec.make(rng, brand)
                if title not in seen:
                    break
            base, version = title, 1
            while title in seen:
                version += 1
                title = f"{base} v{version}"
            seen.add(title)
            lo, hi = spec.price
            price = round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 0) - 0.01
            attr_text = ", ".join(f"{key}: {value}" for key, value in attrs.items())
            rows.append((title, name, brand, price, f"{title}. {name}. {brand}. {attr_text}"))
    order = rng.permutation(len(rows))  # ids say nothing about the category
    titles, cats, brands_, prices, texts = zip(*[rows[i] for i in order])
    return pl.DataFrame(
        {"item_id": [f"P{i:05d}" for i in range(1, len(rows) + 1)], "text": list(texts), "title": list(titles),
         "category": list(cats), "brand": list(brands_), "price": list(prices)},
        schema={"item_id": pl.Utf8, "text": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8, "brand": pl.Utf8,
                "price": pl.Float64})


class _Sampler:
    """Popularity-weighted draws from item groups (all, a category, a category + brand)."""

    def __init__(self, cats: list[str], brands: list[str], weights: np.ndarray, rng: np.random.Generator):
        self.rng, self.groups = rng, {}
        groups: dict[object, list[int]] = {}
        for i, (cat, brand) in enumerate(zip(cats, brands)):
            groups.setdefault(None, []).append(i)
            groups.setdefault(cat, []).append(i)
            groups.setdefault((cat, brand), []).append(i)
        for key, members in groups.items():
            idx = np.array(members)
            self.groups[key] = (idx, np.cumsum(weights[idx]) / weights[idx].sum())

    def draw(self, key: object, avoid: int = -1) -> int:
        idx, cum = self.groups.get(key) or self.groups[key[0] if isinstance(key, tuple) else None]
        for _ in range(4):
            item = int(idx[min(int(np.searchsorted(cum, self.rng.random())), len(idx) - 1)])
            if item != avoid:
                break
        return item


def generate_shop(n_users: int = 600, n_items: int = 900, seed: int = 0, *, min_interactions: int = 3,
                  max_interactions: int = 30, accessory_prob: float = 0.55, same_brand_prob: float = 0.8,
                  repeat_prob: float = 0.25, taste_prob: float = 0.75, zipf_exponent: float = 0.9,
                  start: int = START_2024, name: str = "synthetic-shop") -> Dataset:
    """Generate the synthetic shop (deterministic for a given seed): items with title/category/brand/price
    and text "title. category. brand. attributes"; users with category/brand tastes whose sequences
    follow planted habits (main product -> same-brand accessory, repeat-category browsing, Zipf-like
    popularity); 3-30 interactions per user with increasing epoch-second timestamps from 2024-01-01."""
    if n_items < 2 * len(CATEGORIES) or n_users < 1 or not 1 <= min_interactions <= max_interactions:
        raise ValueError(f"need n_items >= {2 * len(CATEGORIES)}, n_users >= 1 and "
                         f"1 <= min_interactions <= max_interactions")
    rng = np.random.default_rng(seed)
    items = _catalogue(n_items, rng)
    cats, brands = items["category"].to_list(), items["brand"].to_list()
    popularity = 1.0 / (rng.permutation(items.height) + 1.0) ** zipf_exponent
    sampler = _Sampler(cats, brands, popularity, rng)
    names = list(CATEGORIES)
    start_weight = np.array([2.0 if CATEGORIES[c].accessories else 1.0 for c in names])
    start_weight /= start_weight.sum()
    item_ids = items["item_id"].to_list()

    users, seq_items, stamps = [], [], []
    for u in range(n_users):
        tastes = [names[i] for i in rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False,
                                               p=start_weight)]
        fav_brand = _pick(rng, BRANDS[CATEGORIES[tastes[0]].dept]) if rng.random() < 0.5 else None
        length = int(min(max_interactions, min_interactions + rng.geometric(1 / 8) - 1))
        clock = start + int(rng.integers(0, 180 * DAY))
        last = -1
        for _ in range(length):
            brand, accessories = None, CATEGORIES[cats[last]].accessories if last >= 0 else ()
            p_accessory = accessory_prob if accessories else 0.0
            r = rng.random()
            if last >= 0 and r < p_accessory:  # a main product pulls in one of its accessories
                cat = _pick(rng, accessories)
                brand = brands[last] if rng.random() < same_brand_prob else None
                gap = rng.exponential(DAY)
            elif last >= 0 and r < p_accessory + repeat_prob:  # browsing the same category
                cat, gap = cats[last], rng.exponential(DAY / 2)
            else:  # something new: one of the user's tastes, or wherever popularity pulls
                cat = _pick(rng, tuple(tastes)) if rng.random() < taste_prob else cats[sampler.draw(None)]
                if fav_brand in BRANDS[CATEGORIES[cat].dept] and rng.random() < 0.7:
                    brand = fav_brand
                gap = rng.exponential(6 * DAY)
            last = sampler.draw((cat, brand) if brand else cat, avoid=last)
            clock += 60 + int(gap)
            users.append(f"U{u + 1:05d}")
            seq_items.append(item_ids[last])
            stamps.append(clock)
    interactions = pl.DataFrame({"user_id": users, "item_id": seq_items, "timestamp": stamps},
                                schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64})
    report = ImportReport(rows_read={"synthetic": interactions.height},
                          notes=[f"synthetic shop, seed={seed}: not real shoppers or products"])
    return Dataset(name, items, interactions, report)
