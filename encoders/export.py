"""Export a bundle for use outside this project: the item vectors as Parquet and the item tower as ONNX (text
tokens → item vector), each ONNX graph checked against the bundle's own PyTorch tower on catalogue texts.

A bundle whose item vectors are [trained, zero-shot] (the zero-shot blend) exports two graphs: `item_tower.onnx`
(the trained text path) and `zero_shot_tower.onnx` (frozen BERT → principal projection); an item's vector is their
outputs concatenated, as `export.json` says; a seed ensemble exports one graph per member
(`item_tower_member_k.onnx`). Tokenise with each part's tokenizer directory and max_length.

A trained graph's `vectors` output is a new item's vector (a zero ID block). For a new text of an item the towers
were trained on, combine its second output, `text_block`, with the item's ID code (`<graph>_id_codes.npy`, rows in
the order of `<graph>_id_codes.json`) through `with_id_code`, as export.json's `id_codes` entry says: the item keeps
its ID block, as the served towers keep it on an upsert (`TwoTowerModel.item_text_vectors`). Towers that keep each
trained item's own neighbour share (neighbour features, bundles from stop 59 on) mix such an item's new text with
its own neighbours' means at its own share: their graph has two more inputs, `own_means` [batch, hidden] and
`own_share` [batch], which `own_neighbour_inputs` builds from `<graph>_own_means.npy` / `_own_shares.npy` (rows in
the order of `<graph>_own_neighbours.json`): the item's row for a text of such an item, zeros and share 0 for any
other text (a new item's text part). With them the join is the served vector of every trained item's new text; the
parity check compares it with the towers' served path (export.json's `own_neighbours` entry)."""

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
from encoders.towers import TwoTowerModel
from recsys.catalogue import REMOVED
from recsys.errors import BundleError
from recsys.pipeline import Recommender
from recsys.towers import innermost_tower

PARITY_TOLERANCE = 1e-4
OPSET = 17
OWN_INPUTS = ("own_means", "own_share")  # a trained graph's inputs for its items' own neighbours (`OwnRows`)


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
    compute it (`TwoTowerModel.item_text_vectors`). Towers that keep their items' own neighbours take two more
    inputs, `own_means` [B, hidden] and `own_share` [B] (`OwnRows.inputs`): rows with a share > 0 are mixed with
    them (`TwoTowerModel.own_text_block`), as the towers mix a trained item's new text."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, own_means: torch.Tensor | None = None,
                own_share: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.bert(input_ids, attention_mask)
        block = (self.model.text_block(features) if own_means is None
                 else self.model.own_text_block(features, own_means, own_share))
        vectors = F.pad(block, (0, self.model.id_dim)) if self.model.id_dim else block
        return F.normalize(vectors, dim=-1), block


def with_id_code(text_block: np.ndarray, id_codes: np.ndarray, fusion: str) -> np.ndarray:
    """Item vectors of trained items from the graph's `text_block` [n, w] and their ID codes [n, id width]:
    normalise(concat(text_block, id_code)) with `fusion` "concat", normalise(text_block + id_code) with "sum"."""
    vectors = np.hstack([text_block, id_codes]) if fusion == "concat" else text_block + id_codes
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _rows(item_ids: Sequence[str], wanted: Sequence[str | None]) -> np.ndarray:
    """int64 [len(wanted)]: each wanted item's row in `item_ids`, −1 for one not there (or None)."""
    row = {item_id: i for i, item_id in enumerate(item_ids)}
    return np.fromiter((row.get(i, -1) if i is not None else -1 for i in wanted), np.int64, len(wanted))


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`values`' rows at `rows` (float32), zero where a row is −1."""
    out = np.zeros((len(rows), *values.shape[1:]), dtype=np.float32)
    out[rows >= 0] = values[rows[rows >= 0]]
    return out


@dataclass
class IdCodes:
    """A trained part's ID codes: the catalogue items the towers hold an ID embedding for, their codes, and how the
    codes join the text block."""

    item_ids: list[str]
    codes: np.ndarray  # float32 [len(item_ids), id width]
    fusion: str

    def of(self, item_ids: Sequence[str | None]) -> np.ndarray:
        """float32 [len(item_ids), id width]: each item's code, a zero row for an item without one (or None)."""
        return _take(self.codes, _rows(self.item_ids, item_ids))

    def join(self, text_block: np.ndarray, item_ids: Sequence[str | None]) -> np.ndarray:
        """`with_id_code` for texts of `item_ids`: each item's code, zero for an item without one (a new item's
        vector)."""
        return with_id_code(text_block, self.of(item_ids), self.fusion)


@dataclass
class OwnRows:
    """A trained part's own neighbours: the catalogue items the towers mix their own neighbours' means into on a
    new text, those means and each item's share (`OwnNeighbours.lookup`), and how the graph mixes them ("share":
    (1 − share) × own features + share × means; "block": [own features, means] into the head)."""

    item_ids: list[str]
    means: np.ndarray  # float32 [len(item_ids), hidden]
    shares: np.ndarray  # float32 [len(item_ids)]
    mix: str

    def inputs(self, item_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
        """The graph's `own_means` / `own_share` for texts of `item_ids`: each item's row, zeros and share 0 for
        an item not among them (or None): a new item's text part."""
        rows = _rows(self.item_ids, item_ids)
        return dict(zip(OWN_INPUTS, (_take(self.means, rows), _take(self.shares, rows))))


def id_codes_of(directory: Path, entry: dict, item_ids: Sequence[str | None]) -> np.ndarray:
    """The ID codes of `item_ids` for `with_id_code`, read from the export in `directory` (`entry`: the graph's
    entry in export.json's `onnx` list, which has `id_codes`): a zero row for an item without one (or None: a new
    item)."""
    codes, directory = entry["id_codes"], Path(directory)
    return IdCodes(json.loads((directory / codes["item_ids"]).read_text()),
                   np.load(directory / codes["codes"], allow_pickle=False), codes["fusion"]).of(item_ids)


def own_neighbour_inputs(directory: Path, entry: dict, item_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
    """A trained graph's `own_means` / `own_share` inputs for texts of `item_ids` (None: a new item), read from the
    export in `directory` (`entry`: the graph's entry in export.json's `onnx` list); {} for a graph without them
    (towers that keep no item's own neighbours), so `{**tokens, **own_neighbour_inputs(…)}` feeds any graph."""
    own = entry.get("own_neighbours")
    if not own:
        return {}
    directory = Path(directory)
    rows = OwnRows(json.loads((directory / own["item_ids"]).read_text()),
                   np.load(directory / own["means"], allow_pickle=False),
                   np.load(directory / own["shares"], allow_pickle=False), own["mix"])
    return rows.inputs(item_ids)


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
    own: OwnRows | None = None  # towers that keep their items' own neighbours: the graph's inputs for them
    served: Callable[[list[str], list[str]], np.ndarray] | None = None  # trained parts: texts of these items


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

    state = tower.catalogue.state
    ids = state.ids[(state.flags & REMOVED) == 0].tolist()  # the live catalogue's items
    positions = tower.id_positions(ids)
    return TowerPart(name, _TrainedTower(model), tokenizer, max_length, tower.encode_item_texts,
                     _id_codes(model, ids, positions), tied, _own_rows(model, ids, positions), tower.encode_item_texts)


def _id_codes(model: TwoTowerModel, ids: list[str], positions: np.ndarray) -> IdCodes | None:
    """The ID codes of the items `ids` (at training `positions`, −1 for none) that the towers `model` hold an ID
    embedding for (seen in training); None for towers without ID embeddings."""
    if model.id_embedding is None:
        return None
    seen = model.id_mask.cpu().numpy() > 0
    rows = np.flatnonzero((positions >= 0) & (positions < len(seen)) & seen[np.clip(positions, 0, len(seen) - 1)])
    with torch.no_grad():
        codes = model.id_codes(torch.as_tensor(positions[rows], device=model.id_mask.device))
    return IdCodes([ids[r] for r in rows], codes.float().cpu().numpy(), "concat" if model.id_dim else "sum")


def _own_rows(model: TwoTowerModel, ids: list[str], positions: np.ndarray) -> OwnRows | None:
    """The own neighbours' means and shares of the items `ids` (at training `positions`, −1 for none) that have
    some (`OwnNeighbours.lookup`); None for towers `model` that keep none (no neighbour features, or saved before
    stop 59: their trained items' new texts take a new item's text part, which the graph computes without these
    inputs)."""
    if not model.keeps_own_neighbours:
        return None
    own = model.own_neighbours
    with torch.no_grad():
        means, shares = own.lookup(torch.as_tensor(positions, device=own.shares.device), model.borrowed_means())
    means, shares = means.float().cpu().numpy(), shares.float().cpu().numpy()
    rows = np.flatnonzero(shares > 0)
    return OwnRows([ids[r] for r in rows], means[rows], shares[rows], "block" if own.block else "share")


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
    under PARITY_TOLERANCE. A trained part also writes its ID codes and its items' own neighbours, and checks the
    graph on the texts of `item_ids` (the texts' items, when they are catalogue texts) as the towers serve those
    items (`_check_trained_items`). Returns the part's export.json entry."""
    import onnxruntime

    module = part.module.eval().to("cpu")
    sample = part.tokenizer(list(texts[:2]), padding=True, truncation=True, max_length=part.max_length,
                            return_tensors="pt")

    def own(ids: Sequence[str | None]) -> dict[str, np.ndarray]:  # the own neighbour inputs, for graphs with them
        return part.own.inputs(ids) if part.own is not None else {}

    inputs = {"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"],
              **{name: torch.as_tensor(v) for name, v in own([None] * len(sample["input_ids"])).items()}}
    outputs = ["vectors", "text_block"] if part.id_codes is not None else ["vectors"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that the parity check below covers
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=False, input_names=list(inputs),
                          output_names=outputs,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        **{name: {0: "batch"} for name in [*list(inputs)[2:], *outputs]}},
                          opset_version=OPSET)
    batch = part.tokenizer(list(texts), padding=True, truncation=True, max_length=part.max_length, return_tensors="np")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    got = session.run(None, {**tokens, **own([None] * len(texts))})  # as new items' texts
    expected = part.reference(list(texts))
    tied = part.tied(list(texts)) if part.tied is not None and len(texts) else np.zeros(len(texts), dtype=bool)
    diff = _parity(part.name, got[0], expected, ~tied)
    entry = {"file": path.name, "dim": int(got[0].shape[1]), "max_length": part.max_length, "opset": OPSET,
             "inputs": list(inputs), "output": "vectors",
             "parity": {"texts": int((~tied).sum()), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE,
                        "tied_texts": int(tied.sum())}}
    if part.id_codes is not None or part.own is not None:
        ids = list(item_ids or ())
        trained = session.run(None, {**tokens, **own(ids)}) if ids and part.own is not None else got
        entry.update(_check_trained_items(part, path, trained, texts, ids, tied))
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


def _check_trained_items(part: TowerPart, path: Path, outputs: list[np.ndarray], texts: Sequence[str],
                         item_ids: list[str], tied: np.ndarray) -> dict:
    """Write the part's ID codes (`<graph>_id_codes.npy`, rows in the order of `<graph>_id_codes.json`) and its
    items' own neighbours (`<graph>_own_means.npy` and `_own_shares.npy`, rows in the order of
    `<graph>_own_neighbours.json`) beside its graph, and check the graph's vectors for `texts` read as `item_ids`'
    texts, its `outputs` run with those items' own neighbour inputs (the ID-code join over `text_block`; `vectors`
    without ID codes), against the towers' served path for them (`part.served`: the ID block and own neighbours
    kept), over the texts of items with a code, and of items with own neighbours. A text left out for a tie
    (`tied`) stays out unless its item has own neighbours (which borrow nothing). Returns the `id_codes` and
    `own_neighbours` entries."""
    codes, own, stem, n = part.id_codes, part.own, path.name.removesuffix(".onnx"), len(item_ids)
    joined = codes.join(outputs[1][:n], item_ids) if codes is not None else outputs[0][:n]
    served = part.served(list(texts[:n]), item_ids) if n else joined
    has_own = np.isin(item_ids, own.item_ids) if own is not None else np.zeros(n, dtype=bool)
    kept = ~tied[:n] | has_own

    def parity(rows: np.ndarray, what: str) -> dict:
        diff = _parity(f"{part.name} ({what})", joined[rows], served[rows]) if rows.any() else 0.0
        return {"texts": int(rows.sum()), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}

    entry: dict = {}
    if codes is not None:
        np.save(path.parent / f"{stem}_id_codes.npy", codes.codes.astype(np.float32), allow_pickle=False)
        (path.parent / f"{stem}_id_codes.json").write_text(json.dumps(codes.item_ids))
        entry["id_codes"] = {"codes": f"{stem}_id_codes.npy", "item_ids": f"{stem}_id_codes.json",
                             "rows": len(codes.item_ids), "fusion": codes.fusion, "output": "text_block",
                             "parity": parity(np.isin(item_ids, codes.item_ids) & kept, "items with an ID code")}
    if own is not None:
        np.save(path.parent / f"{stem}_own_means.npy", own.means.astype(np.float32), allow_pickle=False)
        np.save(path.parent / f"{stem}_own_shares.npy", own.shares.astype(np.float32), allow_pickle=False)
        (path.parent / f"{stem}_own_neighbours.json").write_text(json.dumps(own.item_ids))
        then = ("join text_block with the item's ID code (id_codes)" if codes is not None
                else "vectors is the item's vector")
        entry["own_neighbours"] = {
            "items": len(own.item_ids), "item_ids": f"{stem}_own_neighbours.json", "means": f"{stem}_own_means.npy",
            "shares": f"{stem}_own_shares.npy", "inputs": list(OWN_INPUTS), "mix": own.mix,
            "parity": parity(has_own, "items with own neighbours"),
            "note": "for a text of one of these items (a new text of a trained item), feed its row of means and "
                    "shares as the graph's own_means and own_share inputs (encoders.export.own_neighbour_inputs), "
                    f"then {then}: the towers' served vector, which the parity check compares with; for any other "
                    "text feed zeros and share 0 (a new item's text part)"}
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
