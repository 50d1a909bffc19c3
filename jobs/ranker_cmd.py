"""`recsys train-ranker`: train the LightGBM re-ranker on a bundle's retrieved candidates and write a new
bundle version with the ranker inside and the before/after metrics in its manifest.

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.app import EVAL_USERS, BundleData, BundleDir, CpuThreads, EventStoreOpt, EvalUsersOpt, NewBundleOut, \
    RedisTimeoutOpt, RedisUrlOpt, StateDirOpt, app, cap_cpu_threads, check_beside, eval_sample, read_json_object, \
    validation_problems, writes_a_bundle
from jobs.batch_cmd import store_source
from jobs.options import OneOf, comma_list
from jobs.output import console, metrics_table
from recsys.store import EVENT_KINDS, REDIS_TIMEOUT_S
from recsys.text_format import counted, plural

TrainPositions = Annotated[Optional[int], typer.Option(
    min=0, help="also train on the last N positions of each train-split sequence (default: RankerConfig's)")]
TransitionCandidates = Annotated[Optional[int], typer.Option(
    min=0, help="extra candidates: the last item's most frequent successors (default: RankerConfig's)")]
PopularCandidates = Annotated[Optional[int], typer.Option(
    min=0, help="extra candidates: the most popular items (default: RankerConfig's)")]
CvFolds = Annotated[Optional[int], typer.Option(
    min=0, help="K ≥ 2: K folds of the training users, each fit early-stopped on its own fold (then summed, or "
                "refit: --fold-ensemble/--fold-refit); 0: one fit early-stopped on the held-out users (default: "
                "RankerConfig's, 5)")]
FoldEnsemble = Annotated[Optional[bool], typer.Option(
    "--fold-ensemble/--fold-refit", help="with --cv-folds K: the K fold models summed, or one refit with their "
                                          "mean tree count (default: RankerConfig's, summed)")]
Candidates = Annotated[Optional[int], typer.Option(
    min=1, help="retrieved items re-ranked per query (default: --config's, else RankerConfig's: 200)")]
RankerThreads = Annotated[Optional[int], typer.Option(min=1, help="LightGBM threads (default: --config's, else 1)")]
RankerConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", help="JSON object of RankerConfig overrides (features, LightGBM settings, …; nested 'features' "
                     "merge); the options above win over it")]
MANIFEST_OWN_KEYS = ("files", "created_at", "git_sha", "libraries", "bundle_schema_version", "config", "encoder")


def kept_manifest(manifest: dict) -> dict:
    """The entries of a bundle's manifest that a bundle derived from it carries over (the rest `save` writes)."""
    return {k: v for k, v in manifest.items() if k not in MANIFEST_OWN_KEYS}


def load_bundle(path: Path):
    """Any bundle (zero-shot or trained towers) as a Recommender."""
    from encoders.loading import load_recommender

    return load_recommender(path)


def read_overrides(path: Path | None) -> dict:
    """The JSON object of RankerConfig overrides in `path` ({} for None); typer.BadParameter (--config) when it
    cannot be read, is not an object or names fields RankerConfig does not have."""
    from recsys.ranker import RankerConfig

    overrides = read_json_object(path, "RankerConfig overrides")
    unknown = sorted(set(overrides) - set(RankerConfig.model_fields))
    if unknown:
        raise typer.BadParameter(f"{path}: unknown RankerConfig fields {unknown}", param_hint="--config")
    return overrides


def ranker_config(candidates: int | None, n_jobs: int | None, seed: int | None, train_positions: int | None = None,
                  transition_candidates: int | None = None, popular_candidates: int | None = None,
                  cv_folds: int | None = None, fold_ensemble: bool | None = None, overrides: dict | None = None):
    """A RankerConfig from `overrides` (a `--config` file's; nested `features` merge into the default
    FeatureConfig) and the CLI's options over them (None: not given); typer.BadParameter (--config) for an
    invalid value (the options' own ranges are checked by typer)."""
    from pydantic import ValidationError

    from recsys.ranker import RankerConfig

    given = {"candidates": candidates, "n_jobs": n_jobs, "seed": seed, "train_positions": train_positions,
             "transition_candidates": transition_candidates, "popular_candidates": popular_candidates,
             "cv_folds": cv_folds, "fold_ensemble": fold_ensemble}
    try:
        return RankerConfig().with_overrides({**(overrides or {}), **{k: v for k, v in given.items() if v is not None}})
    except ValidationError as error:  # named by the option that gave the value, else --config
        fields = {str(problem["loc"][0]) for problem in error.errors() if problem.get("loc")}
        options = [f"--{name.replace('_', '-')}" for name in given if name in fields and given[name] is not None]
        raise typer.BadParameter(f"invalid setting: {validation_problems(error)}",
                                 param_hint=options[0] if options else "--config") from None


def bundle_and_dataset(bundle: Path, data: Path):
    """(bundle path, manifest, dataset); DataError when the bundle was built on another dataset."""
    from jobs.workflows import built_on_other_dataset, load_dataset
    from recsys.artifacts import read_manifest, resolve_bundle
    from recsys.errors import DataError

    path = resolve_bundle(bundle)
    manifest = read_manifest(path)
    dataset = load_dataset(data)
    if built_on_other_dataset(manifest, dataset):
        raise DataError(f"the bundle {path} was built on another dataset (fingerprint differs)", source=str(data))
    return path, manifest, dataset


def open_with_data(bundle: Path, data: Path):
    """(recommender, the dataset's split, bundle path, manifest); DataError when the bundle was built on another
    dataset."""
    from recsys.splits import split_dataset

    path, manifest, dataset = bundle_and_dataset(bundle, data)
    return load_bundle(path), split_dataset(dataset), path, manifest


def open_for_ranker(bundle: Path, data: Path):
    """(recommender without a re-ranker, the dataset's split, bundle path, manifest); DataError when the bundle
    was built on another dataset."""
    from recsys.errors import BundleError

    recommender, split, path, manifest = open_with_data(bundle, data)
    refit = manifest.get("train", {}).get("refit")
    if refit:  # its towers learned the valid targets a re-ranker learns on (and maybe test's): in-sample figures
        raise BundleError(f"the towers of {path} were refit through the {refit['through']} step (`recsys refit`), so "
                          f"they learned the valid-step targets a re-ranker learns on: train the re-ranker on the "
                          f"bundle the refit was made from{made_from(manifest)}, then refit that one (the refit "
                          "keeps its re-ranker)")
    recommender.reranker = None  # retrain from retrieval candidates, even if the bundle had a ranker
    return recommender, split, path, manifest


def train_on_bundle(bundle: Path, data: Path, config, ks: tuple[int, ...] = (10, 20, 50), log=console.print,
                    eval_users: int | None = None):
    """(recommender with its new re-ranker, training report, test evaluation, bundle path, old manifest); the
    test evaluation on a seeded sample of `eval_users` examples when there are more (None: all)."""
    from recsys.evaluation import sample_examples
    from recsys.ranker_training import evaluate_reranker, train_reranker

    recommender, split, path, manifest = open_for_ranker(bundle, data)
    reranker, report = train_reranker(recommender, split, config, log=log, progress=True)
    recommender.reranker = reranker
    test = sample_examples(split.test, eval_users, config.seed)
    of = f" (a seeded sample of {test.height:,} of {split.test.height:,} examples)" if test.height < split.test.height \
        else ""
    log(f"trained in {report['seconds']['total']:.1f}s ({report['trees']} trees); evaluating on the test step{of}")
    evaluation = evaluate_reranker(recommender, test, ks, progress=True)
    if test.height < split.test.height:
        evaluation["sampled_from"] = split.test.height
    return recommender, report, evaluation, path, manifest


def evaluation_rows(evaluation: dict, split: str = "test") -> list[dict]:
    sampled = {"sampled_from": float(evaluation["sampled_from"])} if "sampled_from" in evaluation else {}
    return [{"model": "retrieval-only", "split": split, **evaluation["retrieval"], **sampled},
            {"model": "re-ranked", "split": split, **evaluation["reranked"], **sampled}]


@app.command("train-ranker")
@writes_a_bundle
def train_ranker(
    bundle: BundleDir,
    data: BundleData,
    candidates: Candidates = None,
    out: NewBundleOut = None,
    n_jobs: RankerThreads = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="(default: --config's, else 0)")] = None,
    train_users: Annotated[str, typer.Option(help="valid-step examples to learn from: a seeded sample of this many "
                                                  "when there are more, or 'all'")] = "50000",
    eval_users: EvalUsersOpt = EVAL_USERS,
    train_positions: TrainPositions = None,
    transition_candidates: TransitionCandidates = None,
    popular_candidates: PopularCandidates = None,
    cv_folds: CvFolds = None,
    fold_ensemble: FoldEnsemble = None,
    config_file: RankerConfigFile = None,
    threads: CpuThreads = None,
) -> None:
    """Fit the LightGBM lambdarank re-ranker on the validation step (+ train-split positions; test untouched) and
    save a new bundle."""
    from recsys.artifacts import new_version

    cap_cpu_threads(threads)
    check_beside(bundle, out)
    config = ranker_config(candidates, n_jobs, seed, train_positions, transition_candidates, popular_candidates,
                           cv_folds, fold_ensemble, read_overrides(config_file)).model_copy(
        update={"train_examples": eval_sample(train_users)})
    recommender, report, evaluation, path, manifest = train_on_bundle(bundle, data, config,
                                                                      eval_users=eval_sample(eval_users))
    rows = evaluation_rows(evaluation)
    key = f"candidate_recall@{config.candidates}"
    console.print(metrics_table(rows, f"test: retrieval-only vs re-ranked top-{config.candidates} "
                                      f"(candidate recall@{config.candidates} {evaluation[key]:.4f})"))
    target = out or path.parent / new_version()
    kept = kept_manifest(manifest)
    kept["ranker"] = {"parent_bundle": str(path), "config": config.model_dump(mode="json"), "training": report,
                      "test": rows, key: evaluation[key]}
    console.print(f"[green]bundle with re-ranker written[/] → {recommender.save(target, kept)}")


@app.command("refresh-stats")
@writes_a_bundle
def refresh_stats(
    bundle: BundleDir,
    data: BundleData,
    through: Annotated[Optional[str], typer.Option(
        help="count the dataset's events through this step: 'valid' (+ every user's valid-step event; test stays "
             "evaluable and is scored before and after; the default) or 'test' (every event: for serving, nothing "
             "left to evaluate; the default and the only choice with --store)")] = None,
    out: NewBundleOut = None,
    eval_users: EvalUsersOpt = EVAL_USERS,
    store: Annotated[bool, typer.Option(
        "--store/--no-store", help="also count every event the API recorded in its event store, after the "
                                   "dataset's: the store is taken to hold what came after the dataset (items "
                                   "upserted live get counts too)")] = False,
    state_dir: StateDirOpt = Path("recsys-state"),
    event_store: EventStoreOpt = "sqlite",
    redis_url: RedisUrlOpt = None,
    redis_timeout_s: RedisTimeoutOpt = REDIS_TIMEOUT_S,
    kinds: Annotated[str, typer.Option(help="with --store: the event kinds counted, comma-separated")]
    = ",".join(EVENT_KINDS),
) -> None:
    """Refit the re-ranker's statistics (popularity, transitions, co-occurrence) on the events through a later
    step (and, with --store, the API's live events after them), keeping the ranker, and save a new bundle: what
    a shop serving the engine knows beyond the train split it learned on."""
    from recsys.artifacts import new_version
    from recsys.errors import BundleError
    from recsys.evaluation import sample_examples
    from recsys.splits import last_event_time
    from recsys.stats_refresh import live_time_warnings, refreshed

    through = through or ("test" if store else "valid")
    if through not in ("valid", "test"):
        raise typer.BadParameter(f"must be valid or test, got {through!r}", param_hint="--through")
    if store and through != "test":
        raise typer.BadParameter("the event store's events come after every dataset event: use --through test "
                                 "(the default with --store)", param_hint="--through")
    wanted = parse_kinds(kinds)
    if not store:  # (they were ignored without a word: the refresh counted no live event)
        unused = [name for name, given, default in (("--state-dir", state_dir, Path("recsys-state")),
                                                    ("--event-store", event_store, "sqlite"),
                                                    ("--redis-url", redis_url, None),
                                                    ("--kinds", wanted, EVENT_KINDS)) if given != default]
        if unused:
            raise typer.BadParameter(f"{', '.join(unused)} {plural(len(unused), 'applies', 'apply')} only with "
                                     "--store, which reads the API's event store: add --store (without it the "
                                     "refresh counts no live event)", param_hint=unused[0])
    check_beside(bundle, out)
    source = store_source(True, state_dir, event_store, redis_url, redis_timeout_s) if store else None
    recommender, split, path, manifest = open_with_data(bundle, data)
    if recommender.reranker is None:
        raise BundleError(f"the bundle {path} has no re-ranker (its statistics are the re-ranker's): add one with "
                          "`recsys train-ranker` first")
    before = recommender.reranker
    prior = before.stats.config
    if prior.through != "train" and through == "valid":
        raise BundleError(f"the bundle {path} already has statistics through the {prior.through} step, so there are "
                          f"no train-split statistics to compare --through valid with: refresh the bundle it was "
                          f"made from{made_from(manifest)}")
    live, live_record = read_live_events(source, wanted) if source is not None else (None, None)
    if live is not None and prior.through == through and prior.live_through_seq \
            and live_record["through_seq"] == prior.live_through_seq:
        console.print(f"note: the event store has no event after seq {prior.live_through_seq:,}, which the bundle "
                      "already counts: the new version counts the same events")
    if live is not None:
        check_same_shop(live, set(recommender.catalogue.state.ids) | live_record.pop("upserted"), source.label)
    if prior.through != "train":  # e.g. last night's refresh: refit from the events, so nothing counts twice
        console.print(f"its statistics (through the {prior.through} step"
                      f"{f', {prior.live_events:,} live events' if prior.live_events else ''}) are replaced, not "
                      "added to: the new ones count the dataset's events"
                      f"{' and the whole event store' if live is not None else ''} afresh")
    console.print(f"refitting the statistics on the events through the {through} step"
                  f"{f' and {live.height:,} live events' if live is not None else ''} …")
    after = refreshed(before, split, through, progress=True, live=live,
                      live_through_seq=live_record["through_seq"] if live_record else None)
    record: dict = {"through": through, "events": after.stats.events(), "events_before": before.stats.events()}
    if live is not None:
        known = set(before.stats.item_ids.tolist())
        warnings = live_time_warnings(last_event_time(split, through), live, after.stats.config, time.time())
        for warning in warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        record["live"] = {**live_record, "new_items": len(set(live["item_id"].to_list()) - known),
                          "warnings": warnings}
    if through == "valid":
        test = sample_examples(split.test, eval_sample(eval_users), before.config.seed)
        rows, record["test_n@10_diff"] = refreshed_test_rows(recommender, before, after, test)
        if test.height < split.test.height:
            rows = [{**row, "sampled_from": float(split.test.height)} for row in rows]
        record["test"] = rows
        console.print(metrics_table(rows, f"test, lists as shown: statistics of the train split vs through valid "
                                          f"(N@10 paired difference {record['test_n@10_diff']['diff']:+.4f} ± "
                                          f"{record['test_n@10_diff']['se']:.4f})"))
    recommender.reranker = after
    target = out or path.parent / new_version()
    kept = kept_manifest(manifest)
    # the figures are the parent's (this bundle evaluates no split it counts): each row names the bundle it measured
    kept["metrics"] = [{"measured_on_bundle": str(path), **row} if isinstance(row, dict) else row
                       for row in kept.get("metrics") or []]
    kept["ranker"] = {**kept.get("ranker", {}), "parent_bundle": str(path), "stats_refresh": record}
    console.print(f"[green]bundle with statistics through the {through} step written[/] → "
                  f"{recommender.save(target, kept)} ({record['events_before']:,} → {record['events']:,} events)")


def made_from(manifest: dict) -> str:
    """" (<path>)": the bundle with train-split statistics this one was made from (its statistics refreshed, its
    towers refit, or its lists diversified, once or more), followed up the manifests' `ranker.parent_bundle`: the
    parent of a refresh of a refresh is itself refused; else the commands that write a bundle with train-split
    statistics."""
    from recsys.artifacts import read_manifest
    from recsys.stats import saved_config

    parent, seen = manifest.get("ranker", {}).get("parent_bundle"), set()
    while parent and parent not in seen:
        seen.add(parent)
        try:
            config = saved_config(Path(parent) / "stats")
            if config is None or config.through == "train":
                break
            parent = read_manifest(Path(parent), verify=False).get("ranker", {}).get("parent_bundle") or parent
        except Exception:  # (gone, unreadable, another working directory): the latest one known is named
            break
    return f" ({parent})" if parent else " (the one `recsys train-ranker` or `recsys quickstart` wrote)"


def parse_kinds(text: str) -> tuple[str, ...]:
    """`--kinds`: comma-separated event kinds, each one the API records."""
    return tuple(comma_list(text, "--kinds", OneOf(EVENT_KINDS, "kind")))


def read_live_events(source, kinds: tuple[str, ...]):
    """(the store's events of `kinds` as an `event_frame`, what the manifest records of them): every event up to
    the store's last seq when read."""
    opened = source.open()
    try:
        last = opened.last_event_seq()
        live = opened.event_frame(until=last, kinds=kinds)
        upserted = {item_id for kind, item_id in opened.changed_items() if kind == "upsert"}
    finally:
        opened.close()
    if live.height == 0:
        console.print(f"[yellow]warning:[/] the event store {source.label} holds no {'/'.join(kinds)} events "
                      f"(through its seq {last:,}); the statistics count the dataset's only")
    return live, {"source": source.label, "events": live.height, "through_seq": last, "kinds": list(kinds),
                  "users": live["user_id"].n_unique(), "upserted": upserted}


def check_same_shop(live, items: set[str], label: str) -> None:
    """The API records events on items it serves only (its catalogue, or upserted through it), so live events on
    other items come from another shop's store (`--state-dir` defaults to ./recsys-state, which bundles of several
    shops easily share): an error when every event is such, a warning when some are."""
    from recsys.errors import DataError

    foreign = live.filter(~live["item_id"].is_in(list(items)))
    if foreign.height == 0:
        return
    example = foreign["item_id"][0]
    said = (f"{counted(foreign.height, 'live event')} of {live.height:,} in {label} "
            f"{plural(foreign.height, 'is', 'are')} on items this bundle's catalogue does not hold and the store "
            f"never upserted (e.g. {example!r})")
    if foreign.height == live.height:
        raise DataError(f"{said}: the store looks like another shop's; name this shop's with --state-dir "
                        "(or --redis-url)")
    console.print(f"[yellow]warning:[/] {said}; they are counted")


def refreshed_test_rows(recommender, before, after, test) -> tuple[list[dict], dict]:
    """Test metrics of the lists as shown with `before`'s and `after`'s statistics (the same ranker), and the
    paired per-user N@10 difference with its standard error."""
    from recsys.metrics import paired_difference
    from recsys.ranker_training import shown_row

    rows, gains = [], []
    for name, reranker in (("statistics: train", before), ("statistics: through valid", after)):
        recommender.reranker = reranker
        row, gain = shown_row(recommender, test, name, progress=True)
        rows.append(row)
        gains.append(gain)
    diff, se = paired_difference(gains[1], gains[0])
    return rows, {"diff": diff, "se": se, "n_examples": test.height}
