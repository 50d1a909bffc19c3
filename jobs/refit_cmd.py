"""`recsys refit`: an engine's towers trained again on the events through a later step, for serving
(encoders/refit.py); registered on the app when jobs/cli.py imports this module."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.app import BundleData, BundleDir, CpuThreads, NewBundleOut, app, cap_cpu_threads, check_beside, \
    writes_a_bundle
from jobs.output import console, metrics_table
from jobs.ranker_cmd import bundle_and_dataset, kept_manifest, load_bundle, made_from


@app.command("refit")
@writes_a_bundle
def refit(
    bundle: BundleDir,
    data: BundleData,
    through: Annotated[str, typer.Option(
        help="train on the events through this step: 'valid' (+ every user's valid-step event; test is scored "
             "before and after) or 'test' (every event: for serving, nothing left to evaluate)")] = "valid",
    out: NewBundleOut = None,
    threads: CpuThreads = None,
) -> None:
    """Train an engine's towers again, with the bundle's own settings and chosen number of epochs, on the events
    through a later step, keep its re-ranker with statistics refreshed through the same step, and save a new
    bundle: what a shop serves after choosing its settings on the protocol's splits."""
    import time

    from encoders.experiment import train_and_evaluate
    from encoders.refit import REFIT_STEPS, refit_config, refit_split
    from recsys.artifacts import new_version
    from recsys.config import EvalConfig
    from recsys.errors import BundleError
    from recsys.splits import split_dataset
    from recsys.stats_refresh import refreshed, with_parts

    if through not in REFIT_STEPS:
        raise typer.BadParameter(f"must be valid or test, got {through!r}", param_hint="--through")
    cap_cpu_threads(threads)
    check_beside(bundle, out)
    path, manifest, dataset = bundle_and_dataset(bundle, data)
    if "train" not in manifest:
        raise BundleError(f"the bundle {path} has no trained towers to refit (`recsys train` writes them)")
    config = refit_config(manifest["train"])
    before = load_bundle(path)
    if before.reranker is None:
        raise BundleError(f"the bundle {path} has no re-ranker: add one with `recsys train-ranker` first (the refit "
                          "refreshes its statistics through the same step, which records what the bundle has seen)")
    if before.reranker.stats.config.through != "train":
        raise BundleError(f"the bundle {path} already counts the events through the "
                          f"{before.reranker.stats.config.through} step; refit the bundle it was made from"
                          f"{made_from(manifest)}; `recsys refresh-stats --store` on the refit bundle "
                          "then counts the live events")
    split = split_dataset(dataset)
    refit = refit_split(split, through)
    console.print(f"refitting the towers on the events through the {through} step ({split.train.height:,} → "
                  f"{refit.train.height:,} events), {config.refit_epochs} epochs (the valid figures printed after "
                  f"each epoch are in-sample: the refit trains on those targets) …")
    started = time.perf_counter()
    eval_config = EvalConfig(splits=("test",) if through == "valid" else ())
    trained = train_and_evaluate(dataset, refit, config, name=str(manifest.get("name", "refit")),
                                 eval_config=eval_config)
    after = trained.recommender
    # the towers are assembled with the default diversification: the bundle's own (`recsys diversify`) is kept
    after.config = after.config.model_copy(update={"diversify": before.config.diversify})
    before.reranker = refreshed(before.reranker, split, through, progress=True)  # one fit for both sides
    after.reranker = with_parts(before.reranker, after.catalogue, before.reranker.stats)
    record: dict = {"through": through, "epochs": config.refit_epochs, "stopped": trained.result.stopped,
                    "events_before": split.train.height, "events": refit.train.height,
                    "seconds": round(time.perf_counter() - started, 1)}
    if through == "valid":
        record.update(compare_on_test(before, after, split.test))
        console.print(metrics_table(record["test"], "test, lists as shown: the bundle's towers vs refit through valid "
                                                    f"(towers N@10 {record['towers_n@10_diff']['diff']:+.4f} ± "
                                                    f"{record['towers_n@10_diff']['se']:.4f}, engine "
                                                    f"{record['engine_n@10_diff']['diff']:+.4f} ± "
                                                    f"{record['engine_n@10_diff']['se']:.4f})"))
    target = out or path.parent / new_version()
    kept = kept_manifest(manifest)
    kept["metrics"] = trained.rows
    kept["train"] = {**manifest["train"], "history": trained.result.history, "refit": record}
    kept["ranker"] = {**kept.get("ranker", {}), "parent_bundle": str(path),
                      "stats_refresh": {"through": through, "events": after.reranker.stats.events()}}
    console.print(f"[green]towers refit through the {through} step[/] → {after.save(target, kept)} "
                  f"({record['seconds'] / 60:.1f} min; stopped: {record['stopped']})")


def compare_on_test(before, after, test) -> dict:
    """Test rows (lists as shown) of both bundles' towers alone and with the re-ranker, and the paired per-user N@10
    differences (after − before) of the towers and of the engines."""
    from recsys.metrics import paired_difference
    from recsys.ranker_training import shown_row

    rows, gains = [], {}
    for side, recommender in (("bundle", before), ("refit through valid", after)):
        reranker = recommender.reranker
        for part in ("towers", "engine"):
            recommender.reranker = reranker if part == "engine" else None
            row, gains[side, part] = shown_row(recommender, test, f"{side}: {part}", progress=True)
            rows.append(row)
        recommender.reranker = reranker
    out: dict = {"test": rows}
    for part in ("towers", "engine"):
        diff, se = paired_difference(gains["refit through valid", part], gains["bundle", part])
        out[f"{part}_n@10_diff"] = {"diff": diff, "se": se, "n_examples": test.height}
    return out
