"""Export a bundle for use outside this project: the item vectors as Parquet and the item tower as ONNX (text
tokens → item vector), each ONNX graph checked against the bundle's own PyTorch tower on catalogue texts.

A bundle whose item vectors are [trained, zero-shot] (the zero-shot blend) exports two graphs: `item_tower.onnx`
(the trained text path) and `zero_shot_tower.onnx` (frozen BERT → principal projection); an item's vector is their
outputs concatenated, as `export.json` says; a seed ensemble exports one graph per member
(`item_tower_member_k.onnx`). Tokenise with each part's tokenizer directory and max_length.

A trained graph's `vectors` output is a new item's vector (a zero ID block). For a new text of an item the towers
were trained on, combine its second output, `text_block`, with the item's ID code (`<graph>_id_codes.npy`, rows in
the order of `<graph>_id_codes.json`) through `with_id_code`, as export.json's `id_codes` entry says: the item keeps
its ID block, as the served towers keep it on an upsert (`TwoTowerModel.item_text_vectors`). With neighbour
features, `text_block` is a new item's text part (its own features, or the borrowed share): the graph does not
carry each trained item's own neighbour share, which the served towers mix into such an item's new text (bundles
from stop 59 on). So the join is the served vector for trained items without neighbours, and for the others the
served vector of a bundle built before stop 59; the parity check compares it with that path, and the entry says
how many items it concerns (`own_neighbours`)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.blend import BlendedHistoryEncoder, project
from encoders.ensemble import EnsembleUserTower
from encoders.pooling import pool
from encoders.serving import TrainedUserTower
from recsys.catalogue import REMOVED
from recsys.errors import BundleError
from recsys.pipeline import Recommender
from recsys.towers import innermost_tower

PARITY_TOLERANCE = 1e-4
OPSET = 17


class _FrozenTower(nn.Module):
    """BERT → pooling → L2 normalisation [→ principal projection → L2 normalisation]."""

    def __init__(self, model: nn.Module, pooling: str, normalize: bool, projection: np.ndarray | None = None) -> None:
        super().__init__()
        self.model, self.pooling, self.normalize = model, pooling, normalize
        self.register_buffer("projection", None if projection is None else torch.as_tensor(projection))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = pool(hidden.float(), attention_mask, self.pooling)
        if self.normalize:
            vectors = F.normalize(vectors, dim=-1)
        if self.projection is not None:
            vectors = F.normalize(vectors @ self.projection.T, dim=-1)
        return vectors


class _TrainedTower(nn.Module):
    """The trained item tower's text path: adapted BERT (→ the borrowed neighbour share, with `neighbour_borrow`:
    the graph carries its banks) → item head; two outputs: `vectors` (zero ID block → L2 normalisation: a new
    item's vector) and `text_block` (the head's output, not normalised), which `with_id_code` combines with a
    trained item's ID code (the export's id_codes file) into that item's vector for a new text, as the towers
    compute it (`TwoTowerModel.item_text_vectors`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.model.text_block(self.model.bert(input_ids, attention_mask))
        vectors = F.pad(block, (0, self.model.id_dim)) if self.model.id_dim else block
        return F.normalize(vectors, dim=-1), block


def with_id_code(text_block: np.ndarray, id_codes: np.ndarray, fusion: str) -> np.ndarray:
    """Item vectors of trained items from the graph's `text_block` [n, w] and their ID codes [n, id width]:
    normalise(concat(text_block, id_code)) with `fusion` "concat", normalise(text_block + id_code) with "sum"."""
    vectors = np.hstack([text_block, id_codes]) if fusion == "concat" else text_block + id_codes
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@dataclass
class IdCodes:
    """A trained part's ID codes: the catalogue items the towers hold an ID embedding for, their codes, how the
    codes join the text block, the PyTorch path the join reproduces for such items' texts (a new item's text part
    with the item's ID code), and how many of the items the served towers give their own neighbours' share
    instead."""

    item_ids: list[str]
    codes: np.ndarray  # float32 [len(item_ids), id width]
    fusion: str
    reference: Callable[[list[str], list[str]], np.ndarray]  # without own neighbours, as the join computes
    own_neighbours: int = 0  # of these items, those the served towers give their own neighbours' share


@dataclass
class TowerPart:
    """One ONNX graph: its module, tokenizer and max_length, and the PyTorch path it must agree with; `tied` says
    which texts' vectors hang on how a tie is broken (the graph and PyTorch may keep either equally near item), so
    the parity check leaves them out."""

    name: str
    module: nn.Module
    tokenizer: object
    max_length: int
    reference: Callable[[list[str]], np.ndarray]
    id_codes: IdCodes | None = None  # trained parts: a second output, `text_block`, for `with_id_code`
    tied: Callable[[list[str]], np.ndarray] | None = None


def _frozen_part(name: str, encoder, projection: np.ndarray | None = None) -> TowerPart:
    def reference(texts: list[str]) -> np.ndarray:
        vectors = encoder.encode(texts)
        return project(vectors, projection) if projection is not None else vectors

    module = _FrozenTower(encoder.model, encoder.config.pooling, encoder.config.normalize, projection)
    return TowerPart(name, module, encoder.tokenizer, encoder.config.max_length, reference)


def _trained_part(tower, name: str = "item_tower") -> TowerPart:
    tower.load_text_path()
    model, tokenizer, max_length = tower.model, tower.tokenizer, tower.config.tower.item_max_length

    def tied(texts: list[str]) -> np.ndarray:
        """Texts whose borrowed neighbour share ties at its k-th nearest item (none without a borrowed share)."""
        if model.borrow is None:
            return np.zeros(len(texts), dtype=bool)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        device = next(model.parameters()).device
        with torch.no_grad():
            features = model.bert(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            return model.borrow.tied(features).cpu().numpy()

    return TowerPart(name, _TrainedTower(model), tokenizer, max_length, tower.encode_item_texts, _id_codes(tower),
                     tied)


def _id_codes(tower: TrainedUserTower) -> IdCodes | None:
    """The ID codes of the live catalogue items `tower` holds an ID embedding for (seen in training); None for
    towers without ID embeddings."""
    model = tower.model
    if model.id_embedding is None:
        return None
    state = tower.catalogue.state
    ids = state.ids[(state.flags & REMOVED) == 0].tolist()
    positions = tower.id_positions(ids)
    seen = model.id_mask.cpu().numpy() > 0
    rows = np.flatnonzero((positions >= 0) & (positions < len(seen)) & seen[np.clip(positions, 0, len(seen) - 1)])
    with torch.no_grad():
        codes = model.id_codes(torch.as_tensor(positions[rows], device=model.id_mask.device))
    def borrowed(texts: list[str], item_ids: list[str]) -> np.ndarray:
        """The towers' path for these texts without each item's own neighbours: what the graph's join gives."""
        return tower.encode_item_texts(texts, item_ids, own_neighbours=False)

    return IdCodes([ids[r] for r in rows], codes.float().cpu().numpy(), "concat" if model.id_dim else "sum",
                   borrowed, _own_neighbour_items(model, positions[rows]))


def _own_neighbour_items(model, positions: np.ndarray) -> int:
    """How many of these trained positions the served towers give their own neighbours' share on a new text."""
    own = model.own_neighbours
    if own is None or not own.saved:
        return 0
    shares = own.shares.cpu().numpy()
    return int((shares[positions[positions < len(shares)]] > 0).sum())


def _trained_parts(tower) -> list[TowerPart]:
    """One trained tower's text path, or each member's of a seed ensemble (`item_tower_member_k`)."""
    tower = innermost_tower(tower)
    if isinstance(tower, EnsembleUserTower):
        return [_trained_part(member, f"item_tower_member_{k}") for k, member in enumerate(tower.members)]
    return [_trained_part(tower)]


def tower_parts(recommender: Recommender) -> list[TowerPart]:
    """The graphs that make up the bundle's item tower, in the order of the item vector's columns."""
    from encoders.text_encoder import TextEncoder

    tower = innermost_tower(recommender.user_tower)
    if isinstance(tower, BlendedHistoryEncoder):
        try:
            zero_shot = tower.zero_shot_tower()
        except ValueError:
            raise BundleError("this blended bundle has no zero-shot text encoder to export") from None
        if not hasattr(zero_shot, "model"):  # an ONNX Runtime backend: export the PyTorch tower it stands for
            zero_shot = TextEncoder.from_config(zero_shot.config.model_copy(update={"backend": "torch"}),
                                                torch.device("cpu"))
        return _trained_parts(tower.trained) + [_frozen_part("zero_shot_tower", zero_shot, tower.projection)]
    if isinstance(tower, (TrainedUserTower, EnsembleUserTower)):
        return _trained_parts(tower)
    if recommender.encoder_info.get("kind", "frozen-bert") != "frozen-bert":
        raise BundleError("this bundle's item tower cannot encode text, so there is nothing to export")
    return [_frozen_part("item_tower", TextEncoder.from_config(recommender.config.encoder, torch.device("cpu")))]


def export_onnx(part: TowerPart, path: Path, texts: Sequence[str], item_ids: Sequence[str] | None = None) -> dict:
    """Write `part` as ONNX (dynamic batch and length) and check it on `texts`: max |ONNX − PyTorch| must stay
    under PARITY_TOLERANCE. A trained part also writes its ID codes and checks them on the texts of `item_ids`
    (the texts' items, when they are catalogue texts) that have one. Returns the part's export.json entry."""
    import onnxruntime

    module = part.module.eval().to("cpu")
    sample = part.tokenizer(list(texts[:2]), padding=True, truncation=True, max_length=part.max_length,
                            return_tensors="pt")
    outputs = ["vectors", "text_block"] if part.id_codes is not None else ["vectors"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that the parity check below covers
        torch.onnx.export(module, (sample["input_ids"], sample["attention_mask"]), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=outputs,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        **{name: {0: "batch"} for name in outputs}},
                          opset_version=OPSET)
    batch = part.tokenizer(list(texts), padding=True, truncation=True, max_length=part.max_length, return_tensors="np")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": batch["input_ids"].astype(np.int64),
                             "attention_mask": batch["attention_mask"].astype(np.int64)})
    expected = part.reference(list(texts))
    tied = part.tied(list(texts)) if part.tied is not None and len(texts) else np.zeros(len(texts), dtype=bool)
    diff = _parity(part.name, got[0], expected, ~tied)
    entry = {"file": path.name, "dim": int(got[0].shape[1]), "max_length": part.max_length, "opset": OPSET,
             "inputs": ["input_ids", "attention_mask"], "output": "vectors",
             "parity": {"texts": int((~tied).sum()), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE,
                        "tied_texts": int(tied.sum())}}
    if part.id_codes is not None:
        entry["id_codes"] = _check_id_codes(part, path, got[1], texts, item_ids, ~tied)
    return entry


def _parity(name: str, got: np.ndarray, expected: np.ndarray, kept: np.ndarray | None = None) -> float:
    """max |ONNX − PyTorch| over the rows `kept` (all by default); BundleError past PARITY_TOLERANCE."""
    same = got.shape == expected.shape
    if same and kept is not None:
        got, expected = got[kept], expected[kept]
    diff = float(np.abs(got - expected).max()) if got.size and same else 0.0
    if got.shape != expected.shape or not diff < PARITY_TOLERANCE:
        raise BundleError(f"ONNX export of {name} does not match the PyTorch tower (max |diff| {diff:.2e}, "
                          f"shapes {got.shape} vs {expected.shape})")
    return diff


def _check_id_codes(part: TowerPart, path: Path, text_block: np.ndarray, texts: Sequence[str],
                    item_ids: Sequence[str] | None, kept: np.ndarray) -> dict:
    """Write the part's ID codes beside its graph (`<graph>_id_codes.npy`, rows in the order of
    `<graph>_id_codes.json`'s item ids) and check `with_id_code` over the graph's `text_block` against the PyTorch
    tower for the parity texts `kept` (not left out for a tie) of items that have a code (`texts` read as
    `item_ids`' texts). Returns the entry."""
    codes = part.id_codes
    stem = path.name.removesuffix(".onnx")
    np.save(path.parent / f"{stem}_id_codes.npy", codes.codes.astype(np.float32), allow_pickle=False)
    (path.parent / f"{stem}_id_codes.json").write_text(json.dumps(codes.item_ids))
    row = {item_id: i for i, item_id in enumerate(codes.item_ids)}
    known = [n for n, item_id in enumerate(item_ids or ()) if item_id in row and kept[n]]
    diff = 0.0
    if known:
        got = with_id_code(text_block[known], codes.codes[[row[item_ids[n]] for n in known]], codes.fusion)
        diff = _parity(f"{part.name} (items with an ID code)", got,
                       codes.reference([texts[n] for n in known], [item_ids[n] for n in known]))
    entry = {"codes": f"{stem}_id_codes.npy", "item_ids": f"{stem}_id_codes.json", "rows": len(codes.item_ids),
             "fusion": codes.fusion, "output": "text_block",
             "parity": {"texts": len(known), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}}
    if codes.own_neighbours:
        entry["own_neighbours"] = {
            "items": codes.own_neighbours,
            "note": "text_block is a new item's text part (the borrowed neighbour share, or own features): the "
                    "served towers mix these items' new texts with their own neighbours' means instead, which this "
                    "graph does not carry; the parity check compares the join with the towers' path without them"}
    return entry


def write_item_vectors(recommender: Recommender, path: Path) -> dict:
    """items.parquet: item_id, active, the catalogue's title/category/brand/price, and `vector` (float32[dim])."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    state = recommender.catalogue.state
    live = (state.flags & REMOVED) == 0  # deleted items (tombstone rows) are not exported
    vectors = np.ascontiguousarray(state.vectors[live], dtype=np.float32)
    table = state.items.filter(live).drop("text").with_columns(active=state.available[live]).to_arrow()
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    pq.write_table(table.append_column("vector", column), path, compression="zstd")
    return {"file": path.name, "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1])}


def export_bundle(recommender: Recommender, out: Path, onnx: bool = True, parity_texts: int = 64) -> dict:
    """Write items.parquet, the ONNX graph(s) with their tokenizers, and export.json into `out` (which must exist
    and be empty); returns export.json's content."""
    info: dict = {"vectors": write_item_vectors(recommender, out / "items.parquet"), "onnx": []}
    if onnx:
        head = recommender.items.head(parity_texts)
        texts, item_ids = head["text"].to_list(), head["item_id"].to_list()
        for part in tower_parts(recommender):
            tokenizer_dir = out / f"{part.name}_tokenizer"
            part.tokenizer.save_pretrained(str(tokenizer_dir))
            entry = export_onnx(part, out / f"{part.name}.onnx", texts, item_ids)
            # every graph reads the item's text rendered through the catalogue's template (recsys.data.item_text)
            info["onnx"].append({**entry, "tokenizer": tokenizer_dir.name, "item_template": recommender.text_template})
        info["item_vector"] = ("concatenate the outputs of " + " and ".join(e["file"] for e in info["onnx"])
                               + " (in this order)") if len(info["onnx"]) > 1 else info["onnx"][0]["file"]
    (out / "export.json").write_text(json.dumps(info, indent=2))
    return info
