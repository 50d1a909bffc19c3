"""Load any bundle as a Recommender, importing torch only when its user tower needs it."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.artifacts import resolve_bundle
from recsys.errors import BundleError
from recsys.pipeline import Recommender


def user_tower_kind(path: Path) -> str:
    """`encoder/encoder.json`'s user tower ("pooled" for zero-shot bundles)."""
    try:
        return json.loads((path / "encoder" / "encoder.json").read_text()).get("user_tower", "pooled")
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read encoder/encoder.json ({exc})") from exc


def load_recommender(bundle: str | Path, verify: bool = True) -> Recommender:
    """Zero-shot bundles load without torch (fast API start, light batch actors); bundles with a
    trained user tower go through `encoders.bundle`."""
    path = resolve_bundle(bundle)
    if user_tower_kind(path) == "pooled":
        return Recommender.load(path, verify=verify)
    from encoders.bundle import load_recommender as load_trained

    return load_trained(path, verify=verify)


def innermost_tower(tower):
    """The user tower under the serving wrappers (cache, micro-batcher)."""
    while hasattr(tower, "tower"):
        tower = tower.tower
    return tower


class TrainedItemEncoder:
    """`encode(texts)` through a trained bundle's own item tower (its text-only path), so new items
    and free-text queries land in the space the bundle was trained in."""

    def __init__(self, tower) -> None:
        self.tower = tower

    @property
    def dim(self) -> int:
        return self.tower.dim

    def encode(self, texts: list[str]):
        return self.tower.encode_item_texts(list(texts))


def item_text_encoder(recommender: Recommender, path: str | Path = "bundle", quantize_int8: bool = False):
    """Item tower for this bundle's free text (new items, text queries): the trained towers' own text path, else
    the frozen BERT the bundle was built with (never a different model: its vectors would live in another space)."""
    tower = innermost_tower(recommender.user_tower)
    if hasattr(tower, "encode_item_texts"):
        return TrainedItemEncoder(tower)
    if recommender.encoder_info.get("kind", "frozen-bert") != "frozen-bert":
        raise BundleError(f"{path}: this bundle's item tower cannot encode new text")
    from encoders.text_encoder import load_text_encoder, quantize_dynamic_int8

    encoder = load_text_encoder(recommender.config.encoder)
    return quantize_dynamic_int8(encoder) if quantize_int8 else encoder
