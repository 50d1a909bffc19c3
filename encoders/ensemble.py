"""Seed ensembles: K towers trained alike from different seeds (`TrainConfig.ensemble`), served as one tower.

Item vectors are the members' item vectors side by side, [v_1, …, v_K] (each block unit length, so the index's
per-item normalisation scales every item alike), and query vectors [u_1, …, u_K] / √K: one inner product (one
FAISS search, the re-ranker's tower-score feature) is the mean of the members' scores, and the index, the
re-ranker, the batch jobs and the API see one tower of width Σ dim_k. The zero-shot blend, when trained, adds
its block after the members' (`encoders.blend`: the ensemble is its trained tower).

In the bundle, member k's towers live in `encoder/member-k/` (the same files as a one-tower bundle's
`encoder/`), and `encoder/encoder.json` lists them under `ensemble`. Serving costs K user-tower passes per
uncached query; each member loads its own BERT backbone."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recsys.catalogue import Catalogue
from recsys.errors import BundleError
from recsys.towers import ItemTower, UserTower

ENSEMBLE_KEY = "ensemble"  # encoder/encoder.json entry of ensemble bundles


def member_dir(k: int) -> str:
    """The sub-directory of `encoder/` that holds member k."""
    return f"member-{k}"


class EnsembleUserTower(UserTower):
    """Query vectors [u_1(h), …, u_K(h)] / √K for item vectors [v_1, …, v_K]: member k reads its own block of
    the catalogue's columns (`members[k].columns`), blocks in member order from `start`."""

    def __init__(self, members: Sequence[UserTower], config=None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        catalogues = {id(m.catalogue) for m in members}
        if len(catalogues) != 1:
            raise ValueError("the members of an ensemble must read one catalogue")
        self.members = list(members)
        self.widths = [int(m.dim) for m in self.members]
        self.config = config if config is not None else getattr(self.members[0], "config", None)

    @classmethod
    def over_blocks(cls, members: Sequence, catalogue: Catalogue, start: int = 0, config=None) -> "EnsembleUserTower":
        """Trained user towers (`TrainedUserTower`, any catalogue) rebound to consecutive column blocks of
        `catalogue` from `start`, each as wide as the member is."""
        rebound, at = [], start
        for member in members:
            width = int(member.dim)
            rebound.append(member.over(catalogue, slice(at, at + width)))
            at += width
        return cls(rebound, config)

    @property
    def dim(self) -> int:
        return sum(self.widths)

    @property
    def catalogue(self) -> Catalogue | None:
        return self.members[0].catalogue

    @property
    def start(self) -> int:
        """The first catalogue column the ensemble reads."""
        return int(self.members[0].columns.start or 0)

    def over(self, catalogue: Catalogue, columns: slice | None = None) -> "EnsembleUserTower":
        """The same members reading `catalogue` (from `columns.start`; default: the same columns)."""
        start = self.start if columns is None else int(columns.start or 0)
        return EnsembleUserTower.over_blocks(self.members, catalogue, start, self.config)

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim]: the members' unit rows side by side over √K (unit rows; zero rows for
        empty / unknown-only histories, as every member's)."""
        parts = [member.encode_histories(histories) for member in self.members]
        return (np.hstack(parts) / np.float32(math.sqrt(len(parts)))).astype(np.float32, copy=False)

    def item_tower(self) -> "EnsembleItemTower":
        return EnsembleItemTower([member.item_tower() for member in self.members])

    def encode_item_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[member 1's text-only vector, …, member K's] per (already rendered) text."""
        return self.item_tower().encode_texts(list(texts))

    def save(self, directory: Path) -> None:
        """Member k's files into `directory/member-k/`; the ensemble itself is recorded in encoder.json
        (`ensemble_info`)."""
        for k, member in enumerate(self.members):
            member.save(Path(directory) / member_dir(k))

    def close(self) -> None:
        for member in self.members:
            member.close()


class EnsembleItemTower(ItemTower):
    """New item texts through every member's item path, blocks side by side like the catalogue's."""

    def __init__(self, members: Sequence[ItemTower]) -> None:
        self.members = list(members)
        self.template = self.members[0].template

    @property
    def dim(self) -> int:
        return sum(int(m.dim) for m in self.members)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.hstack([m.encode_texts(list(texts)) for m in self.members]).astype(np.float32, copy=False)

    def encode_texts_of(self, texts: Sequence[str], item_ids: Sequence[str | None]) -> np.ndarray:
        """Each member keeps a trained item's ID block in its own block (`ItemTower.encode_texts_of`)."""
        return np.hstack([m.encode_texts_of(list(texts), item_ids) for m in self.members]).astype(np.float32,
                                                                                              copy=False)


def ensemble_info(tower: EnsembleUserTower) -> dict:
    """What encoder.json records so `load_ensemble` can rebuild the tower from the bundle."""
    return {"members": [member_dir(k) for k in range(len(tower.members))], "dims": tower.widths,
            "seeds": [int(member.config.seed) for member in tower.members]}


def load_ensemble(encoder_dir: Path, info: dict, catalogue: Catalogue,
                  load_member: Callable[[Path, slice], UserTower]) -> EnsembleUserTower:
    """Rebuild a bundle's ensemble: `load_member(directory, columns)` loads one member's towers reading
    `columns` of `catalogue`; members' blocks start at column 0."""
    names, dims = info.get("members"), info.get("dims")
    if not names or not dims or len(names) != len(dims):
        raise BundleError(f"{encoder_dir}: encoder.json's ensemble entry is malformed ({info!r})")
    members, at = [], 0
    for name, width in zip(names, dims):
        if not (Path(encoder_dir) / name).is_dir():
            raise BundleError(f"{encoder_dir}: ensemble member {name!r} is missing")
        members.append(load_member(Path(encoder_dir) / name, slice(at, at + int(width))))
        at += int(width)
    config = getattr(members[0], "config", None)  # member 0's TrainConfig, as the whole ensemble's
    return EnsembleUserTower(members, config.model_copy(update={"ensemble": len(members)}) if config else None)
