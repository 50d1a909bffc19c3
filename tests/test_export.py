"""`recsys export`: item vectors as Parquet and the item tower as ONNX, parity-checked against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from encoders.loading import item_text_encoder, load_recommender
from encoders.text_encoder import TextEncoder
from jobs.cli import app
from recsys.artifacts import resolve_bundle
from recsys.errors import BundleError
from recsys.data.synthetic import generate_shop

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _onnx_vectors(out, entry, texts):
    return _onnx_outputs(out, entry, texts)[0]


def _onnx_outputs(out, entry, texts, item_ids=None):
    """The exported graph `entry` on `texts`, as new items' texts or, with `item_ids`, as those items' (a graph
    with own neighbour inputs gets their rows: `own_neighbour_inputs`)."""
    import onnxruntime
    from transformers import AutoTokenizer

    from encoders.export import own_neighbour_inputs

    tokenizer = AutoTokenizer.from_pretrained(str(out / entry["tokenizer"]))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=entry["max_length"], return_tensors="np")
    session = onnxruntime.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": batch["input_ids"].astype(np.int64),
                              "attention_mask": batch["attention_mask"].astype(np.int64),
                              **own_neighbour_inputs(out, entry, item_ids or [None] * len(texts))})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_bert_dir):
    """A zero-shot bundle (frozen tiny BERT) and a trained one with a zero-shot blend (two ONNX graphs)."""
    root = tmp_path_factory.mktemp("export")
    data = generate_shop(n_users=80, n_items=120, seed=0).save(root / "shop")
    assert _run("build", "--data", data, "--out", root / "art", "--name", "zs", "--model", tiny_bert_dir).exit_code == 0
    (root / "cfg.json").write_text(json.dumps({"zero_shot_blend": [1.0], "zero_shot_dims": 8}))
    result = _run("train", "--data", data, "--out", root / "art", "--name", "tuned", "--preset", "smoke", "--model",
                  tiny_bert_dir, "--epochs", 1, "--threads", 1, "--config", root / "cfg.json")
    assert result.exit_code == 0, result.output
    return root, resolve_bundle(root / "art" / "zs"), resolve_bundle(root / "art" / "tuned")


def test_export_vectors_and_onnx_of_a_zero_shot_bundle(bundles):
    pytest.importorskip("onnxruntime")
    root, bundle, _ = bundles
    out = root / "out-zs"
    result = _run("export", "--bundle", bundle, "--out", out)
    assert result.exit_code == 0, result.output
    recommender = load_recommender(bundle)
    table = pl.read_parquet(out / "items.parquet")
    assert table["item_id"].to_list() == recommender.item_ids and table["active"].all()
    np.testing.assert_array_equal(np.stack(table["vector"].to_numpy()), recommender.item_vectors)
    info = json.loads((out / "export.json").read_text())
    [entry] = info["onnx"]
    assert entry["file"] == "item_tower.onnx" and entry["dim"] == recommender.item_vectors.shape[1]
    assert entry["parity"]["texts"] == 64 and entry["parity"]["max_abs_diff"] < 1e-4
    # unseen texts, a batch size the export never saw; the last two as many tokens long (one vector under all [UNK])
    texts = ["a brand-new waterproof camera bag", "short", "red tent", "laptop sleeve"]
    # the export is the fp32 graph of the bundle's BERT: PyTorch's vectors to 1e-4; the bundle itself encodes with
    # ONNX Runtime int8 (`recsys build`'s default), close to them but not to 1e-4 (onnxruntime 1.32: 6e-4 here)
    served = item_text_encoder(recommender)
    assert served.config.backend == "onnx-int8"
    torch_fp32 = TextEncoder.from_config(served.config.model_copy(update={"backend": "torch"}), torch.device("cpu"))
    exported = _onnx_vectors(out, entry, texts)
    np.testing.assert_allclose(exported, torch_fp32.encode(texts), atol=1e-4)
    np.testing.assert_allclose(exported, served.encode(texts), atol=5e-3)
    assert_apart(exported)
    result = _run("export", "--bundle", bundle, "--out", out)
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert _run("export", "--bundle", bundle, "--out", out, "--overwrite", "--no-onnx").exit_code == 0
    assert not (out / "item_tower.onnx").exists() and (out / "items.parquet").is_file()


def test_export_of_a_trained_blended_bundle_gives_two_graphs_that_rebuild_its_vectors(bundles):
    pytest.importorskip("onnxruntime")
    root, _, bundle = bundles
    out = root / "out-tuned"
    result = _run("export", "--bundle", bundle, "--out", out, "--parity-texts", 16)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "export.json").read_text())
    assert [e["file"] for e in info["onnx"]] == ["item_tower.onnx", "zero_shot_tower.onnx"]
    assert all(e["parity"]["max_abs_diff"] < 1e-4 and e["parity"]["texts"] == 16 for e in info["onnx"])
    recommender = load_recommender(bundle)
    texts = ["Nordvik 24 MP Mirrorless Camera, black. Cameras. Nordvik.", "a tent for two", "red tent", "laptop sleeve"]
    parts = [_onnx_vectors(out, entry, texts) for entry in info["onnx"]]
    assert sum(p.shape[1] for p in parts) == recommender.item_vectors.shape[1]
    np.testing.assert_allclose(np.hstack(parts), item_text_encoder(recommender).encode(texts), atol=1e-4)
    for part in parts:  # both graphs read the words
        assert_apart(part)


def test_the_exported_graph_gives_a_trained_items_new_text_its_id_code_as_torch_does(bundles):
    """The graph ended with a zero ID block: a new text of a trained item came out as a new item's vector, where
    the served towers keep the item's ID block."""
    pytest.importorskip("onnxruntime")
    from encoders.export import with_id_code
    from recsys.data.item_text import item_text

    root, _, bundle = bundles
    out = root / "out-tuned-ids"
    result = _run("export", "--bundle", bundle, "--out", out, "--parity-texts", 8)
    assert result.exit_code == 0, result.output
    trained, zero_shot = json.loads((out / "export.json").read_text())["onnx"]
    entry = trained["id_codes"]
    assert entry["fusion"] == "sum" and entry["output"] == "text_block" and "id_codes" not in zero_shot
    said = " ".join(result.output.split())  # the command says what it wrote, and its check
    assert f"item_tower_id_codes.npy: the ID codes of {entry['rows']} trained items (a new text of one: its " \
           f"`text_block` output with its code, sum), max |ONNX − PyTorch| " in said, said
    assert entry["parity"]["texts"] == 8 and entry["parity"]["max_abs_diff"] < 1e-4  # catalogue texts, trained items
    item_ids = json.loads((out / entry["item_ids"]).read_text())
    codes = np.load(out / entry["codes"], allow_pickle=False)
    recommender = load_recommender(bundle)
    assert entry["rows"] == len(item_ids) == codes.shape[0] and set(item_ids) <= set(recommender.item_ids)
    row = int(np.linalg.norm(codes, axis=1).argmax())
    record = {**recommender.item_records([item_ids[row]])[0], "text": "waterproof hiking boots, brown leather"}
    text = item_text(record, recommender.item_tower().template)
    vectors, block = _onnx_outputs(out, trained, [text])
    known = with_id_code(block, codes[[row]], entry["fusion"])
    zero_shot_vectors = _onnx_vectors(out, zero_shot, [text])
    served = recommender.item_tower().encode_items([record, {**record, "item_id": "brand-new"}])
    np.testing.assert_allclose(np.hstack([known, zero_shot_vectors]), served[:1], atol=1e-4)
    np.testing.assert_allclose(np.hstack([vectors, zero_shot_vectors]), served[1:], atol=1e-4)  # a new item's
    assert np.linalg.norm(known - vectors) > 1e-3


def assert_apart(vectors: np.ndarray, at_least: float = 1e-2) -> None:
    """No two rows (vectors of different texts) closer than `at_least`."""
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert distances[~np.eye(len(vectors), dtype=bool)].min() > at_least, distances


def test_export_refuses_a_directory_it_did_not_write_and_explains_a_missing_onnx(bundles, tmp_path, monkeypatch):
    import sys

    _, bundle, _ = bundles
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    result = _run("export", "--bundle", bundle, "--out", tmp_path / "mine", "--overwrite")
    assert result.exit_code == 2 and "holds no export" in result.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = _run("export", "--bundle", bundle, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "pip install 'bert-recsys[onnx]'" in result.output
    assert not (tmp_path / "x").exists()


class _BorrowingToy(torch.nn.Module):
    """Token embeddings mean-pooled → a borrowed neighbour share (k = 1) whose first two keys are the same text."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        from encoders.neighbour_features import BorrowedShare

        weight = torch.zeros(vocab, 4)
        weight[:, 0] = torch.where(torch.arange(vocab) % 2 == 0, 1.0, -1.0)  # even tokens lean to keys 0 and 1
        weight[:, 1:] = torch.linspace(-1, 1, vocab * 3).reshape(vocab, 3) * 0.1
        self.embedding = torch.nn.Embedding.from_pretrained(weight)
        self.borrow = BorrowedShare(k=1, share=0.5, hidden=4)
        keys = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
        self.borrow.fill(keys, torch.tensor([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]))

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask[..., None].float()
        return (self.embedding(input_ids) * mask).sum(1) / mask.sum(1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.borrow(self.features(input_ids, attention_mask)), dim=-1)


def test_export_parity_leaves_out_texts_whose_borrowed_neighbours_tie(tiny_bert_dir, tmp_path):
    # amazon-scientific's `frozen` engine failed `recsys export` (max |diff| 4.03e-03): a parity text's two nearest
    # items had the same text, and torch's top-k kept the other one than ONNX Runtime's (the lower index)
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from encoders.export import TowerPart, export_onnx

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    module = _BorrowingToy(tokenizer.vocab_size).eval()

    def torch_tower(texts: list[str]) -> np.ndarray:  # breaks the tie the other way: the higher index
        batch = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            features = module.features(batch["input_ids"], batch["attention_mask"])
            sims = torch.nn.functional.normalize(features, dim=-1) @ module.borrow.unit_keys.T
            nearest = len(sims[0]) - 1 - sims.flip(-1).argmax(-1)
            mixed = features * 0.5 + module.borrow.values[nearest] * 0.5
        return torch.nn.functional.normalize(mixed, dim=-1).numpy()

    def tied(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            return module.borrow.tied(module.features(batch["input_ids"], batch["attention_mask"])).numpy()

    texts = ["black mirrorless camera", "camera bag brown", "running shoe blue", "running socks blue",
             "silver compact camera", "camera bag black"]
    ties = tied(texts)
    assert 0 < ties.sum() < len(texts)  # some texts lean to the two same keys, some to the third
    part = TowerPart("toy_tower", module, tokenizer, 16, torch_tower)
    with pytest.raises(BundleError, match="does not match the PyTorch tower"):
        export_onnx(part, tmp_path / "before.onnx", texts)
    entry = export_onnx(TowerPart("toy_tower", module, tokenizer, 16, torch_tower, tied=tied), tmp_path / "toy.onnx",
                        texts)
    assert entry["parity"]["tied_texts"] == int(ties.sum())
    assert entry["parity"]["texts"] == len(texts) - int(ties.sum())
    assert entry["parity"]["max_abs_diff"] < 1e-6
