"""Bringing a bundle written before a release's new files up to date, without training again. Today that is one
file: each trained item's own neighbour share (`encoder/own_neighbours.safetensors`, `OwnNeighbours`), which towers
with neighbour features save since stop 59. A bundle without it serves a trained item's new text with a new item's
borrowed share; its shares are rebuilt here from the dataset's training sequences exactly as training built them,
and checked on a sample of the catalogue: each item's own text, through the upgraded path, must give back the
vector the bundle serves for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encoders.loading import trained_towers
from encoders.neighbour_features import NeighbourFeatures
from recsys.errors import BundleError, DataError

CHECK_ITEMS = 64
"""How many items with neighbours the check re-encodes (seeded sample; all of them when fewer)."""
CHECK_TOLERANCE = 1e-4
"""The largest |difference| from the served vector the check accepts (float32 BERT on another thread count)."""


@dataclass(frozen=True)
class OwnNeighboursUpgrade:
    """What `add_own_neighbours` did: towers given their shares, items with neighbours, the check's sample and its
    largest difference; `already` / `none`: towers that had them, or use no neighbours (nothing to add)."""

    upgraded: int
    items_with_neighbours: int
    checked: int
    max_diff: float
    already: int = 0
    none: int = 0


def add_own_neighbours(recommender, dataset, through: str = "train", seed: int = 0) -> OwnNeighboursUpgrade:
    """Give `recommender`'s trained towers (each member of an ensemble, a blend's trained part) the own neighbour
    shares they lack, rebuilt from `dataset`'s events through `through` ("train"; a refit bundle's step), and check
    them (`CHECK_ITEMS`). BundleError when the bundle has no trained towers, or towers that keep the means
    themselves (no borrowed share: no preset; train again); DataError when the dataset does not give these towers'
    catalogue or vectors (another dataset, or another step)."""
    from encoders.refit import refit_split
    from encoders.train_data import build_training_data
    from recsys.splits import split_dataset

    towers = trained_towers(recommender.user_tower)
    if not towers:
        raise BundleError("the bundle has no trained towers (a zero-shot bundle): nothing to upgrade")
    none = sum(t.model.own_neighbours is None for t in towers)
    already = sum(t.model.keeps_own_neighbours for t in towers)
    todo = [t for t in towers if t.model.own_neighbours is not None and not t.model.keeps_own_neighbours]
    if not todo:
        return OwnNeighboursUpgrade(0, 0, 0, 0.0, already, none)
    split = split_dataset(dataset)
    data = build_training_data(dataset, split if through == "train" else refit_split(split, through))
    with_neighbours, checked = 0, []
    for tower in todo:
        model = tower.model
        if model.borrow is None:
            raise BundleError("these towers keep their neighbours' means themselves (neighbour features without a "
                              "borrowed share): train them again to save them")
        n_items = int(model.id_mask.shape[0])
        order = [tower.training_position.get(item_id, -1) for item_id in data.item_ids]
        if len(order) != n_items or order != list(range(n_items)):
            raise DataError(f"its items are not the {n_items:,} items the towers were trained on, in their order: "
                            "pass the dataset the bundle was trained on")
        neighbours = NeighbourFeatures.for_tower(data.sequences, n_items, tower.config.tower)
        shares = neighbours.item_shares().float()
        try:
            model.own_neighbours.load({"shares": shares}, n_items, len(model.borrow.values))
        except ValueError as exc:
            _forget(checked)  # none of the towers keeps shares from events that do not fit them all
            raise DataError(f"its events do not give the towers' neighbours ({exc}): pass the dataset the bundle "
                            "was trained on") from None
        with_neighbours += int((shares > 0).sum())
        checked.append(tower)
    sample, diff = _check(recommender, checked, seed)
    if diff > CHECK_TOLERANCE:
        _forget(checked)
        raise DataError(f"the shares rebuilt from its events do not give the bundle's own vectors back (max |diff| "
                        f"{diff:.1e} over {sample} items): pass the dataset, and for a refit bundle the step, it was "
                        "trained on")
    return OwnNeighboursUpgrade(len(checked), with_neighbours, sample, diff, already, none)


def _forget(towers) -> None:
    """The shares given to `towers` taken back (a refused upgrade leaves the towers as loaded)."""
    for tower in towers:
        tower.model.own_neighbours.clear()


def _check(recommender, towers, seed: int) -> tuple[int, float]:
    """(items re-encoded, max |difference|): a seeded sample of the catalogue's trained items with neighbours, their
    own texts through the item tower's served path, against the vectors the bundle serves."""
    tower = towers[0]
    shares = tower.model.own_neighbours.shares.cpu().numpy()
    state = recommender.catalogue.state
    ids = [i for i in state.ids.tolist() if 0 <= tower.training_position.get(i, -1) < len(shares)
           and shares[tower.training_position[i]] > 0]
    if not ids:
        return 0, 0.0
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(ids), size=min(CHECK_ITEMS, len(ids)), replace=False).tolist())
    sample = [ids[i] for i in picked]
    for each in towers:
        each.load_text_path()
    with torch.no_grad():
        got = recommender.item_tower().encode_items(recommender.item_records(sample))
    served = state.vectors[[state.position[i] for i in sample]]
    return len(sample), float(np.abs(np.asarray(got, np.float32) - np.asarray(served, np.float32)).max())


__all__ = ["CHECK_ITEMS", "CHECK_TOLERANCE", "OwnNeighboursUpgrade", "add_own_neighbours"]
