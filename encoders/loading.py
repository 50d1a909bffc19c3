"""Load any bundle as a Recommender (torch imported only when its user tower needs it), and the item tower that
encodes its new items and free-text queries."""

from __future__ import annotations

from pathlib import Path

from recsys.bundle import Bundle
from recsys.errors import BundleError, RecsysError
from recsys.pipeline import Recommender
from recsys.towers import ItemTower


def user_tower_kind(path: Path) -> str:
    """`encoder/encoder.json`'s user tower ("pooled" for zero-shot bundles)."""
    return Bundle(Path(path), {}).user_tower_kind


def frozen_item_tower(recommender: Recommender, quantize_int8: bool = False) -> ItemTower:
    """The frozen BERT a zero-shot bundle was built with (never a different model: its vectors would live in
    another space); BundleError for bundles whose item tower cannot encode new text."""
    if recommender.encoder_info.get("kind", "frozen-bert") != "frozen-bert":
        raise BundleError("this bundle's item tower cannot encode new text")
    from encoders.text_encoder import load_text_encoder, quantize_dynamic_int8

    encoder = load_text_encoder(recommender.config.encoder)
    return quantize_dynamic_int8(encoder) if quantize_int8 else encoder


def open_recommender(bundle: Bundle, rerank: bool = True) -> Recommender:
    """An opened bundle as a Recommender: zero-shot bundles without torch (fast API start, light batch actors),
    bundles with a trained user tower through `encoders.bundle`. Its item tower is the trained towers' own text
    path, else the frozen BERT (loaded on first use). A part that cannot be read (a file its checksum vouches for
    but its library refuses, e.g. an index written broken) is a BundleError naming the bundle, not the library's
    exception."""
    loader = None
    try:
        if bundle.user_tower_kind != "pooled":
            from encoders.bundle import user_tower_loader as loader
        return Recommender.from_bundle(bundle, loader, frozen_item_tower, rerank=rerank)
    except RecsysError:
        raise
    except Exception as exc:
        raise BundleError(f"cannot load bundle {bundle.path}: {type(exc).__name__}: {exc}") from exc


def load_recommender(bundle: str | Path, verify: bool = True) -> Recommender:
    """`open_recommender(Bundle.open(bundle, verify))`."""
    return open_recommender(Bundle.open(bundle, verify=verify))


def item_text_encoder(recommender: Recommender) -> ItemTower:
    """The item tower for a recommender's new items and free-text queries (`Recommender.item_tower`): its trained
    towers' own text path, else the frozen BERT its bundle was built with."""
    return recommender.item_tower()


def trained_towers(user_tower) -> list:
    """The trained towers (`encoders.serving.TrainedUserTower`) under a recommender's user tower: itself, a seed
    ensemble's members, a zero-shot blend's trained part; none for a zero-shot bundle's."""
    from encoders.blend import BlendedHistoryEncoder
    from encoders.ensemble import EnsembleUserTower
    from encoders.serving import TrainedUserTower
    from recsys.towers import innermost_tower

    tower = innermost_tower(user_tower)
    if isinstance(tower, BlendedHistoryEncoder):
        tower = innermost_tower(tower.trained)
    members = tower.members if isinstance(tower, EnsembleUserTower) else [tower]
    return [m for m in map(innermost_tower, members) if isinstance(m, TrainedUserTower)]
