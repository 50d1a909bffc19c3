"""The synthetic shop's catalogue: made-up products in five departments, each with a title, category, brand,
price band and price, and the text "title. category. brand. attributes" that the BERT item tower reads.

Nothing here describes real products. Brands have a positioning (budget, mid-range or premium) that their items'
price bands lean towards, and each price band covers a third of its category's (log) price range, so the band is
visible in the text ("range: premium") and in the price. Items come out in a seeded random order with Zipf-like
popularity weights (a long tail), which `recsys.data.synthetic` samples behaviour from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

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
CATEGORY_NAMES = tuple(CATEGORIES)
DEPARTMENTS = tuple(BRANDS)
BRAND_NAMES = tuple(brand for dept in DEPARTMENTS for brand in BRANDS[dept])
TIERS = ("budget", "mid-range", "premium")
BRAND_POSITION = {brand: j % len(TIERS) for dept in DEPARTMENTS for j, brand in enumerate(BRANDS[dept])}
"""Each brand's price positioning (index into TIERS): its items lean to that band."""


@dataclass(frozen=True)
class ShopCatalogue:
    """The item table plus integer codes per item (aligned with its rows) for vectorised sampling."""

    items: pl.DataFrame
    category: np.ndarray  # index into CATEGORY_NAMES
    brand: np.ndarray  # index into BRAND_NAMES
    tier: np.ndarray  # index into TIERS
    weight: np.ndarray  # popularity weight (Zipf over a seeded random rank)


def _tier(rng: np.random.Generator, brand: str) -> int:
    """The brand's own band with probability 0.6, else any band."""
    return BRAND_POSITION[brand] if rng.random() < 0.6 else int(rng.integers(len(TIERS)))


def _price(rng: np.random.Generator, bounds: tuple[float, float], tier: int) -> float:
    """Log-uniform within the tier's third of the category's log price range, ending in .99."""
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    step = (hi - lo) / len(TIERS)
    return round(float(np.exp(rng.uniform(lo + tier * step, lo + (tier + 1) * step))), 0) - 0.01


def build_catalogue(n_items: int, rng: np.random.Generator, zipf_exponent: float = 0.9) -> ShopCatalogue:
    """`n_items` distinct products over the 16 categories (shares as in CATEGORIES), in random order."""
    shares = np.array([CATEGORIES[c].share for c in CATEGORY_NAMES])
    counts = np.maximum(1, np.floor(shares / shares.sum() * n_items)).astype(int)
    for i in np.argsort(-shares)[: n_items - counts.sum()]:  # hand out the rounding remainder
        counts[i] += 1
    rows, seen = [], set()
    for name, count in zip(CATEGORY_NAMES, counts):
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
            tier = _tier(rng, brand)
            attr_text = ", ".join(f"{key}: {value}" for key, value in {"range": TIERS[tier], **attrs}.items())
            rows.append((title, name, brand, _price(rng, spec.price, tier), f"{title}. {name}. {brand}. {attr_text}",
                         tier))
    order = rng.permutation(len(rows))  # ids say nothing about the category
    titles, cats, brands_, prices, texts, tiers = zip(*[rows[i] for i in order])
    items = pl.DataFrame(
        {"item_id": [f"P{i:05d}" for i in range(1, len(rows) + 1)], "text": list(texts), "title": list(titles),
         "category": list(cats), "brand": list(brands_), "price": list(prices)},
        schema={"item_id": pl.Utf8, "text": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8, "brand": pl.Utf8,
                "price": pl.Float64})
    category_code = {c: i for i, c in enumerate(CATEGORY_NAMES)}
    brand_code = {b: i for i, b in enumerate(BRAND_NAMES)}
    weight = 1.0 / (rng.permutation(len(rows)) + 1.0) ** zipf_exponent
    return ShopCatalogue(items, np.array([category_code[c] for c in cats]), np.array([brand_code[b] for b in brands_]),
                         np.array(tiers), weight)
