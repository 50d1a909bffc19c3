"""A new text of a trained item takes its own neighbour share, as in training. With neighbour features the item
head reads each item's text features mixed with its neighbours' mean features from the training sequences. The
towers did not keep those means per item, so an upsert of a trained item's new text (stop 58: ID block kept) took
a new item's text part, the share borrowed from its text-nearest items, and lost what its own neighbours gave it
(amazon-scientific, every text edited: test N@10 −1.8 % with the ID block kept)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from encoders.bundle import OWN_NEIGHBOURS_FILE
from encoders.item_bank import encode_texts
from encoders.loading import load_recommender, trained_towers
from encoders.neighbour_features import NeighbourFeatures, neighbour_counts
from encoders.towers import TwoTowerModel
from recsys.config import TowerConfig
from recsys.data.item_text import item_text
from tests.test_trained_item_texts import NEW_TEXT, with_a_new_text

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PRESET_NEIGHBOURS = {"neighbour_mix": 0.5, "neighbour_shrink": 8.0, "neighbour_borrow": 3}  # `cpu` / `frozen`
MODES = {"shrunk share, borrowed": PRESET_NEIGHBOURS,
         "flat share, none borrowed": {"neighbour_mix": 0.3},
         "neighbour block": {"neighbour_features": True}}


def toy_towers(neighbours: dict, hidden: int = 12) -> tuple[TwoTowerModel, NeighbourFeatures]:
    """Towers over 8 items (item 6 without neighbours, item 7 unseen in training) whose neighbour features were
    refreshed from a random catalogue bank, as training leaves them."""
    torch.manual_seed(0)
    config = TowerConfig(dim=16, id_fusion="concat", id_dim=6, seq_layers=1, **neighbours)
    model = TwoTowerModel(None, 8, config, hidden_size=hidden).eval()
    model.id_mask.copy_(torch.tensor([1.0] * 7 + [0.0]))
    sequences = [np.array([0, 1, 2, 3]), np.array([1, 4, 5, 1, 0]), np.array([2, 5]), np.array([6])]
    features = NeighbourFeatures.for_tower(sequences, 8, config, model.borrow, model.own_neighbours)
    features.refresh(torch.randn(8, hidden))
    return model, features


@pytest.mark.parametrize("mode", MODES)
def test_a_trained_items_new_text_is_item_vectors_with_its_own_neighbours(mode):
    model, neighbours = toy_towers(MODES[mode])
    new = torch.randn(6, 12)
    positions = torch.tensor([0, 1, 5, 3, 6, -1])  # four with neighbours, one without, one added after training
    with torch.no_grad():
        got = model.item_text_vectors(new, positions)
        # training's formula: the new features with the item's own neighbours' means at its own share
        expected = model.item_vectors(neighbours(new[:5], positions[:5]), positions[:5])
        borrowed = model.item_text_vectors(new, positions, own_neighbours=False)  # stop 58's path
    torch.testing.assert_close(got[:4], expected[:4], rtol=0, atol=0)
    torch.testing.assert_close(got[4:], borrowed[4:])  # no neighbours, or added later: a new item's text part
    torch.testing.assert_close(got[4], expected[4])  # ... which is what training gave the item without any
    assert (got[:4] - borrowed[:4]).norm(dim=1).min() > 1e-3
    assert not got[5, 10:].any()  # added after training: no ID block


@pytest.mark.parametrize("mode", MODES)
def test_the_own_neighbours_survive_a_save_and_a_load_and_towers_without_them_fall_back(mode):
    model, _ = toy_towers(MODES[mode])
    state = model.own_neighbours.state()
    assert set(state) == ({"shares"} if "neighbour_borrow" in MODES[mode] else {"shares", "means"})  # no copy
    fresh, _ = toy_towers(MODES[mode])
    fresh.own_neighbours.clear()  # towers saved before stop 59
    fresh.load_state_dict(model.state_dict())
    new, positions = torch.randn(3, 12), torch.tensor([0, 4, 6])
    with torch.no_grad():
        torch.testing.assert_close(fresh.item_text_vectors(new, positions),
                                   model.item_text_vectors(new, positions, own_neighbours=False))
        fresh.own_neighbours.load(state, 8, len(model.borrow.values) if model.borrow is not None else None)
        torch.testing.assert_close(fresh.item_text_vectors(new, positions), model.item_text_vectors(new, positions))
    with pytest.raises(ValueError, match="expected 9 items"):
        fresh.own_neighbours.load(state, 9, None)


@pytest.fixture(scope="module")
def neighbour_bundle(tmp_path_factory, tiny_bert_dir):
    """Towers trained (one epoch, tiny BERT) with the presets' neighbour share and an ID block of 6 dimensions."""
    from encoders.experiment import train_and_evaluate
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset
    from tests.test_lora import small_config

    dataset = generate_shop(n_users=60, n_items=90, seed=2)
    tower = TowerConfig(dim=16, item_max_length=24, history_max_length=48, seq_layers=1, id_fusion="concat",
                        id_dim=6, **PRESET_NEIGHBOURS)
    trained = train_and_evaluate(dataset, split_dataset(dataset), small_config(tiny_bert_dir, tower=tower),
                                 name="nbr", out_root=tmp_path_factory.mktemp("nbr"), progress=False)
    return trained.path, dataset


def rebuilt_neighbours(tower, dataset) -> NeighbourFeatures:
    """The neighbour features as training built them: the train split's sequences, refreshed with the catalogue's
    features through the bundle's own BERT."""
    from encoders.train_data import build_training_data
    from recsys.splits import split_dataset

    data = build_training_data(dataset, split_dataset(dataset))
    model = tower.model
    features = NeighbourFeatures.for_tower(data.sequences, len(data.item_ids), model.config)
    features.refresh(torch.as_tensor(encode_texts(model.bert, tower.tokenizer, dataset.items["text"].to_list(),
                                                  model.config.item_max_length, tower.device)))
    return features


def the_tower(recommender):
    (tower,) = trained_towers(recommender.user_tower)
    tower.load_text_path()
    return tower


def an_item_with_neighbours(tower) -> str:
    shares = tower.model.own_neighbours.shares.numpy()
    return next(i for i in tower.catalogue.state.ids.tolist() if shares[tower.training_position[i]] > 0)


def test_the_bundle_keeps_each_items_own_share_as_the_training_sequences_give_it(neighbour_bundle):
    from encoders.train_data import build_training_data
    from recsys.splits import split_dataset

    path, dataset = neighbour_bundle
    saved = load_file(path / "encoder" / OWN_NEIGHBOURS_FILE)
    assert set(saved) == {"shares"}  # the means are the borrowed share's bank, saved once
    data = build_training_data(dataset, split_dataset(dataset))
    degree = np.asarray(neighbour_counts(data.sequences, len(data.item_ids)).sum(axis=1)).ravel()
    np.testing.assert_allclose(saved["shares"].numpy(), 0.5 * degree / (degree + 8.0), rtol=1e-6)
    assert (degree > 0).sum() > 3  # enough items with neighbours for the borrowed share's k = 3
    assert json.loads((path / "manifest.json").read_text())["files"].get(f"encoder/{OWN_NEIGHBOURS_FILE}")


def test_a_new_text_of_a_trained_item_with_neighbours_is_the_towers_vector(neighbour_bundle):
    path, dataset = neighbour_bundle
    recommender = load_recommender(path)
    tower, item_tower = the_tower(recommender), recommender.item_tower()
    item = an_item_with_neighbours(tower)
    changed, text = with_a_new_text(recommender, item)  # its catalogue text: its vector (a new item's share: not)
    got = item_tower.encode_items([changed])[0]
    position = torch.tensor([tower.training_position[item]])
    new = torch.as_tensor(encode_texts(tower.model.bert, tower.tokenizer, [text], tower.config.tower.item_max_length,
                                       tower.device))
    with torch.no_grad():
        expected = tower.model.item_vectors(rebuilt_neighbours(tower, dataset)(new, position), position)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    borrowed = tower.encode_item_texts([text], [item], own_neighbours=False)[0]
    assert np.linalg.norm(got - borrowed) > 1e-3


def test_a_bundle_built_before_the_shares_were_saved_keeps_a_new_items_text_part(neighbour_bundle, tmp_path):
    path, _ = neighbour_bundle
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / "encoder" / OWN_NEIGHBOURS_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"][f"encoder/{OWN_NEIGHBOURS_FILE}"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    before, now = load_recommender(old), load_recommender(path)
    assert not the_tower(before).model.own_neighbours.saved
    item = an_item_with_neighbours(the_tower(now))
    changed = {**now.item_records([item])[0], "text": NEW_TEXT}
    text = item_text(changed, now.item_tower().template)
    np.testing.assert_allclose(before.item_tower().encode_items([changed])[0],
                               the_tower(now).encode_item_texts([text], [item], own_neighbours=False)[0], atol=1e-6)


def test_an_upsert_of_a_new_text_takes_the_items_own_neighbours_through_the_api(neighbour_bundle, tmp_path):
    from api.app import create_app
    from api.service import Service
    from api.settings import Settings

    path, _ = neighbour_bundle
    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN, warm_user_cache=0,
                               warm_similar_items=0))
    with TestClient(create_app(path, service=service)) as client:
        recommender = service.current.recommender
        tower = the_tower(recommender)
        item = an_item_with_neighbours(tower)
        body = {k: v for k, v in recommender.item_records([item])[0].items() if k != "item_id" and v is not None}
        answer = client.put(f"/v1/admin/items/{item}", json={**body, "text": NEW_TEXT}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        state = service.current.recommender.catalogue.state
        text = state.record(item)["text"]
        served = state.vectors[state.position[item]]
        np.testing.assert_allclose(served, tower.encode_item_texts([text], [item])[0], atol=1e-6)
        assert np.linalg.norm(served - tower.encode_item_texts([text], [item], own_neighbours=False)[0]) > 1e-3


def exported_vectors(path, out, records) -> tuple[np.ndarray, dict, str]:
    """`recsys export` of the bundle at `path` into `out`; the vectors of `records` (their texts, as items of
    theirs) as a user of the export computes them: the graph on the texts with the items' own neighbour inputs, its
    `text_block` joined with each item's ID code (a zero code for an item without one)."""
    from typer.testing import CliRunner

    from encoders.export import id_codes_of, with_id_code
    from jobs.cli import app
    from tests.test_export import _onnx_outputs

    result = CliRunner().invoke(app, ["export", "--bundle", str(path), "--out", str(out), "--parity-texts", "16"])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "export.json").read_text())["onnx"][0]
    texts = [item_text(r, load_recommender(path).item_tower().template) for r in records]
    ids = [r["item_id"] for r in records]
    _, block = _onnx_outputs(out, entry, texts, ids)
    joined = with_id_code(block, id_codes_of(out, entry, ids), entry["id_codes"]["fusion"])
    return joined, entry, " ".join(result.output.split())


def test_the_export_gives_a_trained_items_new_text_its_own_neighbours(neighbour_bundle, tmp_path):
    """The graph's ID-code join gave a trained item's new text a new item's share (what bundles built before stop
    59 serve): the export now writes each item's own neighbours and the graph takes them as inputs."""
    pytest.importorskip("onnxruntime")
    path, _ = neighbour_bundle
    recommender = load_recommender(path)
    tower = the_tower(recommender)
    shares = tower.model.own_neighbours.shares.numpy()
    item = an_item_with_neighbours(tower)
    # trained without neighbours (here: never seen in training either, so no ID code; the toy towers of
    # tests/test_export_own_neighbours.py have one with a code)
    alone = next(i for i in tower.catalogue.state.ids.tolist() if shares[tower.training_position[i]] == 0)
    changed = [{**recommender.item_records([i])[0], "text": NEW_TEXT} for i in (item, alone)]
    records = [*changed, {**changed[0], "item_id": "brand-new"}]  # with neighbours, without, added after training
    got, entry, said = exported_vectors(path, tmp_path / "export", records)
    served = recommender.item_tower().encode_items(records)
    np.testing.assert_allclose(got, served, atol=1e-5)
    text = item_text(changed[0], recommender.item_tower().template)
    assert np.linalg.norm(got[0] - tower.encode_item_texts([text], [item], own_neighbours=False)[0]) > 1e-3
    own = entry["own_neighbours"]
    assert entry["inputs"] == ["input_ids", "attention_mask", "own_means", "own_share"] and own["mix"] == "share"
    assert own["items"] == int((shares > 0).sum()) > 0 and own["parity"]["texts"] > 0
    assert own["parity"]["max_abs_diff"] < 1e-4 and entry["id_codes"]["parity"]["max_abs_diff"] < 1e-4
    assert f"item_tower_own_means.npy: the own neighbours of {own['items']} trained items (a new text of one: its " \
           "rows as the graph's own_means and own_share inputs" in said, said


def test_a_bundle_without_the_shares_exports_its_graph_as_before(neighbour_bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    path, _ = neighbour_bundle
    old = a_bundle_from_before_the_shares(path, tmp_path)
    item = an_item_with_neighbours(the_tower(load_recommender(path)))
    changed = {**load_recommender(old).item_records([item])[0], "text": NEW_TEXT}
    got, entry, said = exported_vectors(old, tmp_path / "export", [changed])
    assert entry["inputs"] == ["input_ids", "attention_mask"] and "own_neighbours" not in entry
    assert not list((tmp_path / "export").glob("*own*")) and "own neighbours" not in said
    np.testing.assert_allclose(got, load_recommender(old).item_tower().encode_items([changed]), atol=1e-5)


def test_the_edited_texts_benchmark_adds_the_own_neighbours_row(neighbour_bundle, tmp_path):
    from benchmarks.edited_texts import AS_BUILT, ID_KEPT, OWN_KEPT, TEXT_ONLY, run

    path, dataset = neighbour_bundle
    data = dataset.save(tmp_path / "shop")
    paths = run(path, data, tmp_path / "results", share=0.5, log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == [AS_BUILT, TEXT_ONLY, ID_KEPT, OWN_KEPT] and report["meta"]["own_neighbours"] is True
    assert rows[ID_KEPT]["edited"] == rows[OWN_KEPT]["edited"] == 45
    assert "ID block and own neighbours kept: its text part mixed with its own neighbours' means" in \
        paths["md"].read_text()


def test_a_run_with_neighbour_features_resumes_from_its_checkpoint_and_keeps_the_shares(tiny_bert_dir, tmp_path):
    # the record's buffers are in the checkpoint's trainable state: sized before a resume loads them
    from encoders.training import Trainer
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset
    from tests.test_lora import small_config

    dataset = generate_shop(n_users=40, n_items=60, seed=1)
    split = split_dataset(dataset)
    tower = TowerConfig(dim=16, item_max_length=24, history_max_length=48, seq_layers=1, **PRESET_NEIGHBOURS)
    config = small_config(tiny_bert_dir, tower=tower, epochs=2, patience=5)
    cut = Trainer(dataset, split, config.model_copy(update={"max_minutes": 1e-6}), tmp_path, progress=False).fit()
    assert cut.stopped == "time budget"
    resumed = Trainer(dataset, split, config, tmp_path, progress=False).fit(resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    own = resumed.model.own_neighbours
    assert own.saved and len(own.shares) == 60 and int((own.shares > 0).sum()) == len(resumed.model.borrow.values)


def a_bundle_from_before_the_shares(path, tmp_path):
    """A copy of the bundle at `path` as stop 58 wrote it: no own neighbour shares."""
    old = tmp_path / "model" / "20260101T000000000000Z"
    shutil.copytree(path, old)
    (old / "encoder" / OWN_NEIGHBOURS_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"][f"encoder/{OWN_NEIGHBOURS_FILE}"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def test_upgrade_bundle_gives_an_older_bundle_the_shares_its_training_saves(neighbour_bundle, tmp_path):
    """A bundle written before the shares were saved kept serving a trained item's new text with a new item's
    share, and only training again wrote them. `recsys upgrade-bundle` rebuilds them from the dataset, checks them
    against the bundle's own vectors and writes a new version; on a bundle that has them it writes nothing."""
    from typer.testing import CliRunner

    from jobs.cli import app

    path, dataset = neighbour_bundle
    old = a_bundle_from_before_the_shares(path, tmp_path)
    data = dataset.save(tmp_path / "data")
    result = CliRunner().invoke(app, ["upgrade-bundle", "--bundle", str(old), "--data", str(data)])
    assert result.exit_code == 0, result.output
    versions = sorted((tmp_path / "model").iterdir())
    assert len(versions) == 2 and versions[0] == old
    new = versions[1]
    said = " ".join(result.output.split())
    assert "re-encoded give the bundle's vectors back (max |diff|" in said and str(new) in said
    np.testing.assert_array_equal(load_file(new / "encoder" / OWN_NEIGHBOURS_FILE)["shares"].numpy(),
                                  load_file(path / "encoder" / OWN_NEIGHBOURS_FILE)["shares"].numpy())
    record = json.loads((new / "manifest.json").read_text())["upgrade"]
    assert record["parent_bundle"] == str(old) and record["own_neighbours"]["through"] == "train"
    upgraded, trained = load_recommender(new), load_recommender(path)
    item = an_item_with_neighbours(the_tower(trained))
    changed = {**trained.item_records([item])[0], "text": NEW_TEXT}
    np.testing.assert_allclose(upgraded.item_tower().encode_items([changed])[0],
                               trained.item_tower().encode_items([changed])[0], atol=1e-6)

    again = CliRunner().invoke(app, ["upgrade-bundle", "--bundle", str(new), "--data", str(data)])
    assert again.exit_code == 0 and "nothing to upgrade" in again.output, again.output
    assert len(list((tmp_path / "model").iterdir())) == 2


def test_upgrade_refuses_events_that_do_not_give_the_towers_vectors(neighbour_bundle, tmp_path):
    """Shares rebuilt from other events (the same items) would serve every trained item's new text with the wrong
    neighbours: the check re-encodes a sample of the catalogue and refuses, and the towers keep none."""
    import polars as pl

    from encoders.upgrade import add_own_neighbours
    from recsys.data.dataset import Dataset
    from recsys.errors import DataError

    path, dataset = neighbour_bundle
    old = load_recommender(a_bundle_from_before_the_shares(path, tmp_path))
    inter = dataset.interactions
    users = inter["user_id"].unique().sort()[:20]
    copies = inter.filter(pl.col("user_id").is_in(users.implode())).with_columns(pl.col("user_id") + "-again")
    more = Dataset(dataset.name, dataset.items, pl.concat([inter, copies]))  # the same neighbours, counted more
    with pytest.raises(DataError, match=r"do not give the bundle's own vectors back \(max \|diff\| .* over \d+ "
                                        r"items\)"):
        add_own_neighbours(old, more)
    assert not the_tower(old).model.own_neighbours.saved
    shuffled = inter.with_columns(pl.col("item_id").shuffle(seed=1).over("user_id"))
    with pytest.raises(DataError, match=r"its events do not give the towers' neighbours \(82 items have own "
                                        r"neighbours but the borrowed share's bank holds 81\)"):
        add_own_neighbours(old, Dataset(dataset.name, dataset.items, shuffled))
    assert not the_tower(old).model.own_neighbours.saved
    done = add_own_neighbours(old, dataset)
    assert done.upgraded == 1 and done.checked > 3 and done.max_diff < 1e-4
