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
