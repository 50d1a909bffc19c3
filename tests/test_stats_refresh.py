"""Refreshing a re-ranker's statistics with later events (`recsys refresh-stats`): the counts grow by exactly
the added steps' events, the ranker stays, and a split whose targets are counted cannot be evaluated."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from recsys.artifacts import read_manifest
from recsys.config import BuildConfig
from recsys.errors import DataError
from recsys.pipeline import Recommender
from recsys.ranker import RankerConfig
from recsys.ranker_training import train_reranker
from recsys.splits import events_through, last_event_time, split_dataset
from recsys.stats import StatsConfig
from recsys.stats_refresh import refreshed
from tests.test_ranker import N_ITEMS, N_USERS, planted_dataset

RANKER = RankerConfig(candidates=40, n_estimators=30, early_stopping_rounds=5, cv_folds=0)


@pytest.fixture(scope="module")
def engine():
    dataset = planted_dataset(seed=4)
    split = split_dataset(dataset)
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    recommender = Recommender.build(dataset, split, vectors, BuildConfig())
    recommender.reranker, _ = train_reranker(recommender, split, RANKER, log=lambda *_: None)
    return dataset, split, recommender


def test_events_through_adds_each_steps_targets(engine):
    _, split, _ = engine
    assert events_through(split, "train").height == split.train.height
    valid = events_through(split, "valid")
    assert valid.height == split.train.height + N_USERS
    assert valid.filter(pl.col("user_id") == "u0").sort("timestamp")["item_id"].to_list() == \
        [*split.valid.filter(pl.col("user_id") == "u0")["history"][0], split.valid.filter(
            pl.col("user_id") == "u0")["target"][0]]
    assert events_through(split, "test").height == split.train.height + 2 * N_USERS
    with pytest.raises(ValueError, match="through must be"):
        events_through(split, "later")
    for step in ("train", "valid", "test"):  # read from the frames, not their concatenation
        assert last_event_time(split, step) == events_through(split, step)["timestamp"].max()


def test_refreshed_statistics_count_the_valid_step_and_keep_the_ranker(engine):
    _, split, recommender = engine
    before = recommender.reranker
    after = refreshed(before, split, "valid")
    assert after.ranker is before.ranker and after.builder.names == before.builder.names
    assert (before.stats.config.through, after.stats.config.through) == ("train", "valid")
    assert after.stats.config.time_mode == before.stats.config.time_mode == "sequence"
    assert (before.stats.events(), after.stats.events()) == (split.train.height, split.train.height + N_USERS)
    # an item's count grows by the number of valid targets that are that item
    item = split.valid["target"].mode()[0]
    extra = int((split.valid["target"] == item).sum())
    at = np.array([before.stats.query_time(None)])
    count = lambda stats: int(stats.item_counts(stats.codes([item]), at)[0])  # noqa: E731
    assert count(after.stats) == count(before.stats) + extra
    # the transition from each user's last train item to its valid target is counted
    row = split.valid.row(0, named=True)
    pair = lambda stats: int(stats.pair_counts("transitions", stats.codes([row["history"][-1]]),  # noqa: E731
                                               stats.codes([row["target"]]), at)[0])
    same = sum(1 for h, t in zip(split.valid["history"], split.valid["target"])
               if h[-1] == row["history"][-1] and t == row["target"])
    assert pair(after.stats) == pair(before.stats) + same


def test_a_split_whose_targets_are_counted_is_refused():
    StatsConfig().check_unseen("valid")
    StatsConfig(through="valid").check_unseen("test")
    with pytest.raises(DataError, match="through the valid step .* its valid targets"):
        StatsConfig(through="valid").check_unseen("valid")
    for split in ("valid", "test"):
        with pytest.raises(DataError, match=f"its {split} targets"):
            StatsConfig(through="test").check_unseen(split)


def test_refresh_stats_command_writes_a_bundle_that_refuses_its_counted_splits(engine, tmp_path):
    dataset, split, recommender = engine
    data = dataset.save(tmp_path / "data")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    result = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data),
                                      "--out", str(tmp_path / "valid")])
    assert result.exit_code == 0, result.output
    record = read_manifest(tmp_path / "valid")["ranker"]["stats_refresh"]
    assert (record["through"], record["events_before"], record["events"]) == \
        ("valid", split.train.height, split.train.height + N_USERS)
    assert [row["model"] for row in record["test"]] == ["statistics: train", "statistics: through valid"]
    assert record["test_n@10_diff"]["n_examples"] == N_USERS
    assert "statistics: through valid: 100%" in result.stderr  # a bar while the test lists are scored
    diff = record["test"][1]["ndcg@10"] - record["test"][0]["ndcg@10"]
    assert record["test_n@10_diff"]["diff"] == pytest.approx(diff)
    loaded = Recommender.load(tmp_path / "valid").reranker
    assert loaded.stats.config.through == "valid" and loaded.stats.events() == split.train.height + N_USERS
    # the test step is still evaluable; the valid step is refused, by evaluate and by batch scoring
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", "--data", str(data), "--bundle", str(tmp_path / "valid"), "--no-baselines",
                             "--splits", "test", "--out", str(tmp_path / "ok.json")])
    assert ok.exit_code == 0, ok.output
    for command in (["evaluate", "--data", str(data), "--bundle", str(tmp_path / "valid"), "--no-baselines",
                     "--splits", "valid", "--out", str(tmp_path / "no.json")],
                    ["batch-score", "--bundle", str(tmp_path / "valid"), "--data", str(data), "--split", "valid",
                     "--out", str(tmp_path / "batch"), "--no-store"]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 2 and "its valid targets are among them" in " ".join(refused.output.split())
        assert "Traceback" not in refused.output
    # through valid compares with the train split's statistics, which a refreshed bundle no longer has; every
    # event for serving, from either; clear refusals
    again = runner.invoke(app, ["refresh-stats", "--bundle", str(tmp_path / "valid"), "--data", str(data)])
    assert again.exit_code == 2 and "already has statistics through the valid step" in again.output
    assert f"refresh the bundle it was made from ({engine_dir})" in " ".join(again.output.split())
    onward = runner.invoke(app, ["refresh-stats", "--bundle", str(tmp_path / "valid"), "--data", str(data),
                                 "--through", "test", "--out", str(tmp_path / "onward")])
    assert onward.exit_code == 0, onward.output
    # a refresh of a refresh names the bundle with train-split statistics up its lineage (it named its parent, which
    # the same command refused again)
    twice = runner.invoke(app, ["refresh-stats", "--bundle", str(tmp_path / "onward"), "--data", str(data)])
    said = " ".join(twice.output.split())
    assert twice.exit_code == 2 and f"refresh the bundle it was made from ({engine_dir})" in said, said
    served = runner.invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--through",
                                 "test", "--out", str(tmp_path / "all")])
    assert served.exit_code == 0, served.output
    record = read_manifest(tmp_path / "all")["ranker"]["stats_refresh"]
    assert record["events"] == split.train.height + 2 * N_USERS and "test" not in record
    for a, b in zip(_rows(Recommender.load(tmp_path / "all").reranker.stats),  # the same from the refreshed one
                    _rows(Recommender.load(tmp_path / "onward").reranker.stats)):
        np.testing.assert_array_equal(a, b)
    bad = runner.invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--through", "all"])
    assert bad.exit_code == 2 and "must be valid or test" in bad.output
    bare = Recommender.build(dataset, split, np.eye(N_ITEMS, 16, dtype=np.float32), BuildConfig()).save(
        tmp_path / "bare", {"dataset": {"fingerprint": dataset.fingerprint()}})
    none = runner.invoke(app, ["refresh-stats", "--bundle", str(bare), "--data", str(data)])
    assert none.exit_code == 2 and "has no re-ranker" in none.output


def _rows(stats) -> list[np.ndarray]:
    """Every array that defines the statistics: item ids, times, the item and the two pair tables."""
    return [stats.item_ids, stats.times, *stats.items.rows(), *stats.transitions.rows(), *stats.cooccurrence.rows()]


@pytest.mark.parametrize("data", ["planted", "shop"])
def test_the_valid_step_read_from_an_event_store_gives_the_statistics_through_valid(engine, data):
    """The valid-step events recorded as live events (as the API would have) after the train split give exactly
    the statistics `--through valid` computes from the dataset: in sequence time (planted: positions) and in
    absolute time (the synthetic shop: real timestamps)."""
    from recsys.data.synthetic import generate_shop
    from recsys.stats_refresh import live_frame

    if data == "planted":
        _, split, recommender = engine
    else:
        shop = generate_shop(n_users=40, n_items=60, seed=3)
        split = split_dataset(shop)
        vectors = np.random.default_rng(2).normal(size=(shop.items.height, 16)).astype(np.float32)
        recommender = Recommender.build(shop, split, vectors, BuildConfig())
        recommender.reranker, _ = train_reranker(recommender, split, RANKER, log=lambda *_: None)
    reranker = recommender.reranker
    assert reranker.stats.config.time_mode == ("sequence" if data == "planted" else "absolute")
    valid = split.valid.sample(fraction=1.0, shuffle=True, seed=0)  # the store's order is not the users' order
    rows = [(seq, user, target, "purchase", float(ts)) for seq, (user, target, ts) in
            enumerate(zip(valid["user_id"], valid["target"], valid["timestamp"]), start=1)]
    live = refreshed(reranker, split, "train", live=live_frame(rows))
    expected = refreshed(reranker, split, "valid")
    for got, want in zip(_rows(live.stats), _rows(expected.stats), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (live.stats.config.live_events, live.stats.config.live_through_seq) == (split.valid.height, len(rows))


def test_live_events_follow_each_users_dataset_events_and_new_users_start_at_zero():
    from recsys.stats_refresh import live_events, live_frame

    events = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "timestamp": [0, 1, 0]})
    live = live_frame([(3, "a", "z", "view", 9.5), (1, "new", "x", "cart", 7.0), (2, "a", "x", "purchase", 8.0),
                       (4, "new", "y", "view", 9.9)])
    assert live_events(events, live, "sequence").rows() == [("new", "x", 0), ("a", "x", 2), ("a", "z", 3),
                                                              ("new", "y", 1)]
    assert live_events(events, live, "absolute").rows() == [("new", "x", 7), ("a", "x", 8), ("a", "z", 9),
                                                              ("new", "y", 9)]
    assert live_frame(live.rows(), kinds=("view",))["seq"].to_list() == [3, 4]
    # a timestamp past the year 9999 (stored before the API refused them) is refused in absolute time, named
    late = live_frame([(1, "a", "x", "view", 8.0), (2, "a", "y", "view", 1.7e12)])
    with pytest.raises(DataError, match=r"1 stored event has a timestamp past the year 9999 .*seq 2: 1\.7e\+12"):
        live_events(events, late, "absolute")
    assert live_events(events, late, "sequence").rows() == [("a", "x", 2), ("a", "y", 3)]  # positions, not times


def test_live_events_far_after_the_dataset_or_in_the_future_are_warned_about():
    """The quickstart's shop ends in 2024 and the API stamps events 'now': every query's clock jumped with no word
    (87 of 200 top-10 lists changed for 7 events); a year-2100 event moved it to 2100."""
    from recsys.stats_refresh import live_frame, live_time_warnings

    day, now = 86_400, 1_800_000_000.0
    end = now - 100 * day  # the dataset's last event
    config = StatsConfig(time_mode="absolute", recent_window=30 * day)
    soon = live_frame([(1, "a", "y", "view", now - 80 * day), (2, "b", "x", "view", now)])
    assert live_time_warnings(end, soon, config, now) == []  # 20 days after: within the recent window
    late = live_frame([(1, "a", "y", "view", now - 10 * day), (2, "b", "x", "view", now + 2 * day)])
    first, second = live_time_warnings(end, late, config, now)
    assert first == "1 live event is timed after now (the latest on 2027-01-17): every query is asked after it"
    assert second.startswith("the live events start 90 days after the dataset's last event (2026-10-07 → "
                             "2027-01-05), more than the statistics' recent window (30.0 days)")
    assert live_time_warnings(end, late, config.model_copy(update={"time_mode": "sequence"}), now) == []


def test_refresh_stats_from_the_event_store_counts_live_events_and_live_items(engine, tmp_path):
    from recsys.store import SQLiteEventStore

    dataset, split, recommender = engine
    data = dataset.save(tmp_path / "data")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    store = SQLiteEventStore(tmp_path / "state" / "events.sqlite")
    store.record_change("upsert", "LIVE", {"item_id": "LIVE", "text": "a new item"}, np.ones(16, np.float32))
    store.append_many("u0", ["i3", "LIVE"], "purchase")  # LIVE: an item upserted through the API
    store.append("walk-in", "LIVE", "purchase")
    store.append("u1", "i4", "view")  # not counted with --kinds purchase
    store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--store",
                                 "--state-dir", str(tmp_path / "state"), "--kinds", "purchase",
                                 "--out", str(tmp_path / "live")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # every event is on an item the catalogue or the store's upserts hold
    record = read_manifest(tmp_path / "live")["ranker"]["stats_refresh"]
    assert record["through"] == "test" and record["events"] == split.train.height + 2 * N_USERS + 3
    assert {k: record["live"][k] for k in ("events", "through_seq", "kinds", "users", "new_items")} == \
        {"events": 3, "through_seq": 4, "kinds": ["purchase"], "users": 2, "new_items": 1}
    stats = Recommender.load(tmp_path / "live").reranker.stats
    assert (stats.config.through, stats.config.live_events, stats.config.live_through_seq) == ("test", 3, 4)
    at = np.array([stats.query_time(None)] * 2)
    assert stats.item_counts(stats.codes(["LIVE", "i3"]), at).tolist()[0] == 2
    # u0's purchase of i3 then LIVE follows its last dataset event: one transition i3 → LIVE
    assert int(stats.pair_counts("transitions", stats.codes(["i3"]), stats.codes(["LIVE"]), at[:1])[0]) == 1
    refused = runner.invoke(app, ["evaluate", "--data", str(data), "--bundle", str(tmp_path / "live"),
                                  "--no-baselines", "--splits", "test", "--out", str(tmp_path / "no.json")])
    assert refused.exit_code == 2 and "3 live events from the event store" in refused.output, refused.output
    # another shop's store (the default --state-dir is ./recsys-state): its events name items this shop never served
    other = SQLiteEventStore(tmp_path / "other" / "events.sqlite")
    other.append_many("c1", ["SKU-9", "SKU-7"], "purchase")
    other.close()
    foreign = runner.invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--store",
                                  "--state-dir", str(tmp_path / "other"), "--out", str(tmp_path / "foreign")])
    assert foreign.exit_code == 2 and "2 live events of 2" in foreign.output and "another shop's" in foreign.output
    assert not (tmp_path / "foreign").exists()
    other = SQLiteEventStore(tmp_path / "other" / "events.sqlite")
    other.append("u0", "i3", "purchase")
    other.close()
    mixed = runner.invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--store",
                                "--state-dir", str(tmp_path / "other"), "--out", str(tmp_path / "mixed")])
    assert mixed.exit_code == 0 and "warning: 2 live events of 3" in " ".join(mixed.output.split()), mixed.output
    (tmp_path / "corrupt").mkdir()  # a state directory whose events.sqlite is not SQLite: was a sqlite3 traceback
    (tmp_path / "corrupt" / "events.sqlite").write_text("not a database, whatever its name says")
    plain = ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data)]
    for extra in (["--state-dir", str(tmp_path / "state")], ["--kinds", "purchase"],  # were ignored, no word said
                  ["--event-store", "redis", "--redis-url", "redis://nowhere:6379/0"]):
        bad = runner.invoke(app, plain + extra)
        assert bad.exit_code == 2 and "only with --store" in " ".join(bad.output.replace("│", " ").split())
        assert extra[0] in bad.output
    base = plain + ["--store"]
    for extra, message in ((["--state-dir", str(tmp_path / "state"), "--through", "valid"], "use --through test"),
                           (["--state-dir", str(tmp_path / "state"), "--kinds", "click"], "unknown kind 'click'"),
                           (["--state-dir", str(tmp_path / "nothing")], "no event store at"),
                           (["--state-dir", str(tmp_path / "corrupt")], "cannot open the event store: file is not "
                                                                         "a database")):
        bad = runner.invoke(app, base + extra)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output


def test_refresh_stats_from_a_redis_that_stops_answering_is_one_line_within_the_timeout(engine, tmp_path):
    """The store's ping answered, its first read never did: a traceback of redis' TimeoutError after redis-py's read
    timeout (none in redis-py 5: the job hung for good); --redis-timeout-s bounds each wait."""
    import time

    pytest.importorskip("redis")
    from tests.hung_redis import HungRedis

    dataset, _, recommender = engine
    data = dataset.save(tmp_path / "data")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    with HungRedis(hang_on=b"GET") as server:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(engine_dir), "--data", str(data),
                                          "--store", "--event-store", "redis", "--redis-url", server.url,
                                          "--redis-timeout-s", "0.3", "--out", str(tmp_path / "live")])
        seconds = time.monotonic() - started
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert " ".join(result.output.split()).startswith("error: the Redis event store stopped answering (TimeoutError")
    assert seconds < 10.0 and not (tmp_path / "live").exists()


def test_nightly_refresh_events_through_the_api_then_refresh_stats_then_reload(engine, tmp_path):
    """The whole loop a shop runs: the API records events, `refresh-stats --store` counts them into a new
    version beside the served one, `POST /v1/admin/reload` serves it, and `GET /v1/model` says so."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.service import Service
    from api.settings import Settings

    dataset, split, recommender = engine
    data = dataset.save(tmp_path / "data")
    figures = [{"model": "engine", "split": "test", "slice": "all", "ndcg@10": 0.25}]
    served = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()},
                                                           "metrics": figures})
    settings = Settings(state_dir=tmp_path / "state", admin_token="night")
    admin = {"Authorization": "Bearer night"}
    with TestClient(create_app(served, service=Service(settings))) as client:
        for user, item, kind in (("u0", "i3", "purchase"), ("u0", "i5", "view"), ("walk-in", "i3", "cart")):
            response = client.post("/v1/events", json={"user_id": user, "item_id": item, "kind": kind})
            assert response.status_code == 201, response.text
        result = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(served), "--data", str(data), "--store",
                                          "--state-dir", str(tmp_path / "state"), "--out",
                                          str(tmp_path / "models" / "v2")])
        assert result.exit_code == 0, result.output
        reloaded = client.post("/v1/admin/reload", json={"bundle": "v2"}, headers=admin)
        assert reloaded.status_code == 200 and reloaded.json()["model_version"] == "v2", reloaded.text
        model = client.get("/v1/model").json()
        info = model["ranker"]
        assert (info["statistics_through"], info["statistics_live_events"], info["statistics_live_through_seq"]) == \
            ("test", 3, 3)
        # the figures carried over are v1's, measured with the train split's statistics, and say so
        assert model["metrics"] == [{"measured_on_bundle": str(served), **figures[0]}]
        assert info["statistics_events"] == split.train.height + 2 * N_USERS + 3
        body = client.get("/v1/users/walk-in/recommendations", params={"k": 5}).json()
        assert body["strategy"] == "personalised" and len(body["items"]) == 5
        # the next night: the same command on the model directory refreshes last night's bundle (its newest version),
        # which was refused; its statistics are replaced by a fit of the dataset and the whole store, not added to
        for user, item in (("u1", "i2"), ("walk-in", "i5")):
            assert client.post("/v1/events", json={"user_id": user, "item_id": item}).status_code == 201
        state = ["--data", str(data), "--store", "--state-dir", str(tmp_path / "state")]
        night = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(tmp_path / "models")] + state
                                   + ["--out", str(tmp_path / "models" / "v3")])
        assert night.exit_code == 0, night.output
        assert "(through the test step, 3 live events) are replaced, not added to" in " ".join(night.output.split())
        once = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(served)] + state
                                  + ["--out", str(tmp_path / "once")])
        assert once.exit_code == 0, once.output
        twice, direct = (Recommender.load(path).reranker.stats for path in (tmp_path / "models" / "v3",
                                                                           tmp_path / "once"))
        assert (twice.config.live_events, twice.events()) == (5, split.train.height + 2 * N_USERS + 5)
        assert twice.config == direct.config
        # a night without new events writes the same statistics again, and says so (it said nothing)
        idle = CliRunner().invoke(app, ["refresh-stats", "--bundle", str(tmp_path / "models" / "v3")] + state
                                  + ["--out", str(tmp_path / "idle")])
        assert idle.exit_code == 0, idle.output
        assert "no event after seq 5, which the bundle already counts" in " ".join(idle.output.split()), idle.output
        assert "already counts" not in night.output
        for a, b in zip(_rows(twice), _rows(direct)):
            np.testing.assert_array_equal(a, b)
        assert client.post("/v1/admin/reload", json={"bundle": "v3"}, headers=admin).status_code == 200
        model = client.get("/v1/model").json()
        assert model["ranker"]["statistics_live_events"] == 5
        assert model["metrics"] == [{"measured_on_bundle": str(served), **figures[0]}]  # still v1's, named as such


def test_bench_diversify_refuses_another_dataset_and_counted_test_targets_before_encoding(engine, tmp_path,
                                                                                         monkeypatch):
    """Another dataset's --data ended in an IndexError traceback after the catalogue was encoded (80 s on the
    synthetic shop); a bundle whose statistics count test was refused only after that encoding."""
    import benchmarks.quality

    dataset, split, recommender = engine
    data = dataset.save(tmp_path / "data")
    other = planted_dataset(seed=5).save(tmp_path / "other")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    served = recommender.save(tmp_path / "served", {"dataset": {"fingerprint": dataset.fingerprint()}})
    serving = Recommender.load(served)
    serving.reranker = refreshed(serving.reranker, split, "test")
    serving.save(tmp_path / "all", {"dataset": {"fingerprint": dataset.fingerprint()}})

    def encoded(*args, **kwargs):
        raise AssertionError("the catalogue was encoded before the refusal")

    monkeypatch.setattr(benchmarks.quality, "list_reference", encoded)
    runner = CliRunner()
    for bundle, source, message in ((engine_dir, other, "was built on another dataset (fingerprint differs)"),
                                    (tmp_path / "all", data, "its test targets are among them")):
        result = runner.invoke(app, ["bench", "diversify", "--bundle", str(bundle), "--data", str(source), "--out",
                                     str(tmp_path / "results")])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


def test_ctrl_c_during_a_refresh_says_no_bundle_was_written(engine, tmp_path, monkeypatch):
    """Ctrl-C ended `refresh-stats` (and refit, train-ranker, diversify) with exit code 130 and no word (Typer's
    own handling): the user could not tell whether a half-written bundle was left. It says what was written."""
    dataset, _, recommender = engine
    data = dataset.save(tmp_path / "data")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Recommender, "save", interrupted)
    for command in (["refresh-stats", "--bundle", str(engine_dir), "--data", str(data), "--through", "test",
                     "--out", str(tmp_path / "new")],
                    ["diversify", "--bundle", str(engine_dir), "--weight", "0", "--out", str(tmp_path / "new")]):
        result = CliRunner().invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 130 and "interrupted: no bundle written" in said, said
        assert not (tmp_path / "new").exists() and sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v1"]


def test_a_model_directory_that_cannot_be_written_is_refused_before_the_work(engine, tmp_path, monkeypatch):
    """Without --out the new version goes beside the bundle: a read-only model directory (a read-only mount of the
    served models) ran the whole job, then stopped on an error naming a temporary directory
    ('.2026….tmp-…: Read-only file system'). Refused first, naming the directory and --out. (Root writes anywhere
    here, so the file system's answer is stood in for.)"""
    import jobs.app

    dataset, _, recommender = engine
    data = dataset.save(tmp_path / "data")
    engine_dir = recommender.save(tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    models = (tmp_path / "models").resolve()
    monkeypatch.setattr(jobs.app, "unwritable_reason",
                        lambda path: "Read-only file system" if Path(path).resolve() == models else None)
    for command in (["refresh-stats", "--bundle", str(tmp_path / "models"), "--data", str(data), "--through", "test"],
                    ["diversify", "--bundle", str(engine_dir), "--weight", "0"],
                    ["train-ranker", "--bundle", str(engine_dir), "--data", str(data)],
                    ["upgrade-bundle", "--bundle", str(engine_dir), "--data", str(data)]):
        result = CliRunner().invoke(app, command)
        said = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and f"in {models}, which cannot be written (Read-only file system)" in said, said
        assert "name a writable directory with --out" in said and "refitting" not in said
        assert sorted(p.name for p in models.iterdir()) == ["v1"]
    out = CliRunner().invoke(app, ["diversify", "--bundle", str(engine_dir), "--weight", "0",
                                   "--out", str(tmp_path / "elsewhere")])
    assert out.exit_code == 0, out.output
