"""`recsys` command line: import, build, evaluate, recommend, serve (here), and every other command module (encode,
train, quickstart, batch-score, export, bench …) registered on the app of jobs/app.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

# every command module registers its commands on the app when imported (jobs/app.py owns the app)
from jobs import (  # noqa: F401
    batch_cmd, bench_batch, bench_catalogue, bench_diversify, bench_edited, bench_engine, bench_folds, bench_gpu,
    bench_latency, bench_live, bench_quality, bench_ranker, bench_scale, bench_store, diversify_cmd, encode_cmd,
    export_cmd, push_cmd, quickstart, ranker_cmd, refit_cmd, train_cmd, upgrade_cmd)
from jobs.app import EVAL_USERS, MAX_K, BatchSize, CpuThreads, Decay, EncoderOpt, EvalUsersOpt, IndexOpt, Items, \
    MaxLength, ModelOpt, OnBadRowsOpt, OutOpt, OverwriteOpt, PoolingOpt, Port, Seed, Users, app, arrange_help, \
    bundle_name, cap_cpu_threads, check_ray_only, eval_sample, finish_commands, import_app
from jobs.bench import bench_app
from jobs.options import OneOf, WholeNumber, bad_option_value, comma_list
from jobs.output import console, err_console, index_line, markdown_metrics, metrics_table, print_recommendations, \
    step, write_json
from jobs.paths import writable_out
from recsys.config import BuildConfig, EncoderConfig, EvalConfig, IndexConfig, UserTowerConfig
from recsys.errors import RecsysError, UnknownIdError
from recsys.text_format import counted


def _ks(value: str) -> tuple[int, ...]:
    """--ks: the cut-offs, ascending (a repeat is refused)."""
    return tuple(sorted(comma_list(value, "--ks", WholeNumber(1))))


def _splits(value: str) -> tuple[str, ...]:
    """--splits: valid and/or test, in the order given."""
    return tuple(comma_list(value, "--splits", OneOf(("valid", "test"), "split")))


def _build_config(model: str, max_length: int, batch_size: int, decay: float, ks: str = "10,20,50",
                  splits: str = "valid,test", mask_history: bool = False, seed: int = 0,
                  int8: bool = False, index: str = "flat", eval_users: str = "all",
                  backend: str = "torch", pooling: str = "auto") -> BuildConfig:
    return BuildConfig(
        encoder=EncoderConfig(model=model, max_length=max_length, batch_size=batch_size, quantize_int8=int8,
                              backend=backend, pooling=pooling),
        user_tower=UserTowerConfig(recency_decay=decay),
        index=IndexConfig(kind=index),
        eval=EvalConfig(ks=_ks(ks), splits=_splits(splits), mask_history=mask_history,
                        max_examples=eval_sample(eval_users), seed=seed),
        seed=seed,
    )



def _report_import(dataset, out: Path, overwrite: bool = False) -> None:
    from jobs.workflows import save_dataset

    save_dataset(dataset, out, overwrite)
    summary = dataset.summary()
    console.print(f"[green]imported[/] {summary['name']}: {counted(summary['n_items'], 'item')}, "
                  f"{counted(summary['n_users'], 'user')}, {counted(summary['n_interactions'], 'interaction')} → {out}")
    if dataset.report.rows_read:
        console.print("  read " + ", ".join(f"{counted(n, 'row')} of {escape(name)}"
                                            for name, n in dataset.report.rows_read.items()))
    for reason, count in dataset.report.dropped.items():
        console.print(f"  [yellow]dropped[/] {counted(count, 'row')}: {escape(reason)}")
    if dataset.report.rejected.height:
        rejected = counted(dataset.report.rejected.height, "bad row")
        console.print(f"  [yellow]rejected[/] {rejected} → {out / 'rejected.csv'}")
        for reason, count in dataset.report.rejected_counts().items():
            console.print(f"    {count:,} × {escape(reason)}")
    for note in dataset.report.notes:
        console.print(f"  note: {escape(note)}")


@import_app.command("synthetic")
def import_synthetic(out: OutOpt = Path("data/shop"), users: Users = 600, items: Items = 900, seed: Seed = 0,
                     events: Annotated[Optional[int], typer.Option(min=1, max=1_000_000_000, help="about this many "
                                                                   "interactions in all (sets the mean sequence "
                                                                   "length; default ~9.8 per user)")] = None,
                     overwrite: OverwriteOpt = False) -> None:
    """Generate the seeded synthetic shop (the embedded default data; synthetic, not real customers). Written
    chunk by chunk (100,000 users at a time), so memory stays bounded at any size."""
    from jobs.workflows import write_dataset_dir
    from recsys.data.shop_writer import write_shop

    if events is not None and events < 3 * users:
        raise typer.BadParameter(f"--events {events:,} is under 3 per user (the minimum sequence length) for "
                                 f"{counted(users, 'user')}")
    summary = {}

    def write(directory: Path) -> None:
        summary.update(write_shop(directory, users, items, seed, n_events=events, progress=True))

    write_dataset_dir(out, write, overwrite)
    console.print(f"[green]imported[/] {summary['name']}: {counted(summary['n_items'], 'item')}, "
                  f"{counted(summary['n_users'], 'user')}, {counted(summary['n_interactions'], 'interaction')} → {out}")


@import_app.command("recbole")
def import_recbole(directory: Path, out: OutOpt, overwrite: OverwriteOpt = False,
                   attributes: Annotated[Literal["auto", "parse", "none"], typer.Option(
                       help="category and brand from texts laid out '<title>. <category>. <brand>.' (UniSRec), "
                            "for filters: none, auto (when most texts are) or parse (always)")] = "none",
                   name: Annotated[Optional[str], typer.Option(
                       help="the files' common prefix (Scientific for Scientific.text, …), when DIRECTORY holds "
                            "several datasets' files")] = None) -> None:
    """RecBole/UniSRec atomic files (*.text, *.item2index, *.user2index, *.{train,valid,test}.inter)."""
    from recsys.data.importers import import_recbole_sequential
    from recsys.data.option_names import RECBOLE_FLAGS
    _report_import(import_recbole_sequential(directory, name, attributes, RECBOLE_FLAGS), out, overwrite)


@import_app.command("movielens")
def import_movielens(directory: Path, out: OutOpt, overwrite: OverwriteOpt = False,
                     on_bad_rows: OnBadRowsOpt = "fail") -> None:
    """RecBole atomic MovieLens (ml-100k.inter + ml-100k.item); title, year and genres become the text."""
    from recsys.data.importers import import_recbole_movielens
    from recsys.data.option_names import MOVIELENS_FLAGS
    _report_import(import_recbole_movielens(directory, on_bad_rows, MOVIELENS_FLAGS), out, overwrite)


@import_app.command("table")
def import_table_cmd(
    interactions: Annotated[Path, typer.Option(help="CSV or Parquet with user, item, timestamp columns")],
    items: Annotated[Path, typer.Option(help="CSV or Parquet item table")],
    out: OutOpt,
    user_col: Annotated[str, typer.Option(help="the interactions file's user id column")] = "user_id",
    item_col: Annotated[str, typer.Option(help="the interactions file's item id column")] = "item_id",
    time_col: Annotated[str, typer.Option(help="column of the event times; '' for none (each user's events in file "
                                               "order)")] = "timestamp",
    item_id_col: Annotated[str, typer.Option(help="the item file's id column (the ids --item-col refers "
                                                  "to)")] = "item_id",
    text_col: Annotated[Optional[str], typer.Option(help="one column holding the item text")] = None,
    text_template: Annotated[Optional[str], typer.Option(help="e.g. 'title: {title} | brand: {brand}'")] = None,
    timestamp_format: Annotated[Optional[str], typer.Option(help="strftime format for string timestamps")] = None,
    on_bad_rows: OnBadRowsOpt = "fail",
    delimiter: Annotated[Optional[str], typer.Option(help="field separator of CSV/TXT files: one character, or "
                                                          "tab / comma / semicolon / pipe (default: tab for .tsv, "
                                                          "else comma)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of CSV/TSV/TXT files, e.g. latin-1, cp1252")] = "utf-8",
    items_delimiter: Annotated[Optional[str], typer.Option(help="the items file's separator, when it is not "
                                                                "--delimiter's")] = None,
    items_encoding: Annotated[Optional[str], typer.Option(help="the items file's encoding, when it is not "
                                                               "--encoding's")] = None,
    overwrite: OverwriteOpt = False,
    name: Annotated[Optional[str], typer.Option(help="the dataset's name, which bundles built from it take by "
                                                     "default (default: the --out directory's name)")] = None,
    kind_col: Annotated[Optional[str], typer.Option(help="column of each event's kind (view, cart, purchase, as "
                                                         "the export writes them), counted in the notes and stored: "
                                                         "an imported purchase reads 'because you bought …'")] = None,
    kinds: Annotated[Optional[str], typer.Option(help="keep only the events of these kinds, comma-separated "
                                                      "(e.g. 'purchase,cart'; case ignored); needs --kind-col")]
    = None,
    kind_names: Annotated[Optional[str], typer.Option(help="store the export's own kinds as the API's (view, cart, "
                                                           "purchase), e.g. 'transaction=purchase,addtocart=cart': an "
                                                           "imported transaction reads 'because you bought …'; needs "
                                                           "--kind-col")] = None,
) -> None:
    """Plain CSV/TSV/Parquet with a column mapping and an item-text template."""
    from recsys.data.event_kinds import parse_kind_names, parse_kinds
    from recsys.data.importers import import_table
    from recsys.data.option_names import IMPORT_TABLE_FLAGS
    try:  # named after --out, not after the export's file (every shop's would be "events" → bundle "events-peft")
        dataset = import_table(interactions, items, user_col=user_col, item_col=item_col, time_col=time_col,
                               item_id_col=item_id_col, text_col=text_col, text_template=text_template,
                               timestamp_format=timestamp_format, on_bad_rows=on_bad_rows, delimiter=delimiter,
                               encoding=encoding, items_delimiter=items_delimiter, items_encoding=items_encoding,
                               name=name or out.resolve().name, kind_col=kind_col or None, kinds=parse_kinds(kinds),
                               kind_names=parse_kind_names(kind_names, IMPORT_TABLE_FLAGS), names=IMPORT_TABLE_FLAGS)
    except ValueError as exc:  # a bad option value (delimiter, encoding, template)
        raise bad_option_value(exc) from None
    _report_import(dataset, out, overwrite)


@app.command()
def build(
    data: Annotated[Path, typer.Option(help="dataset directory (recsys import) or raw RecBole/MovieLens directory")],
    out: OutOpt = Path("artifacts"),
    name: Annotated[Optional[str], typer.Option(help="bundle name (default: the dataset's)",
                                                callback=bundle_name)] = None,
    model: ModelOpt = "default", max_length: MaxLength = 64, batch_size: BatchSize = 64, decay: Decay = 0.7,
    engine: Annotated[str, typer.Option(help="encode the catalogue here (local) or on Ray (ray: resumable "
                                              "shards in OUT/NAME/runs/encode)")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, help="ray: actors (default: all CPUs / one per GPU)")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: cluster address (default: a local Ray)")] = None,
    index: IndexOpt = "auto", eval_users: EvalUsersOpt = EVAL_USERS, encoder: EncoderOpt = "onnx-int8",
    pooling: PoolingOpt = "auto", threads: CpuThreads = None,
) -> None:
    """Encode the catalogue, build the index, evaluate, and write a bundle to OUT/NAME/VERSION."""
    from jobs.encode_cmd import encode_options
    from jobs.workflows import build_bundle, load_dataset
    check_ray_only(engine, ray_address, workers)
    cap_cpu_threads(threads)
    config = _build_config(model, max_length, batch_size, decay, index=index, eval_users=eval_users,
                           backend=encoder, pooling=pooling)
    step(f"reading the dataset {data} …")
    dataset = load_dataset(data)
    name = name or dataset.name
    encode = None if engine == "local" else encode_options(out / name / "runs" / "encode", engine, workers, 1,
                                                           ray_address, overwrite=True)
    step(f"loading BERT ({model}) and encoding {dataset.items.height:,} item texts"
         f"{' on Ray' if encode is not None else ''} …")
    path, rows, summary = build_bundle(dataset, config, out, name, encode=encode)
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"))
    console.print(index_line(summary))
    console.print(f"[green]bundle written[/] → {path}")



@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="dataset directory or raw RecBole/MovieLens directory")],
    bundle: Annotated[Optional[Path], typer.Option(
        help="also evaluate this bundle (or a model directory: newest version)")] = None,
    baselines: Annotated[Optional[bool], typer.Option("--baselines/--no-baselines", help="evaluate popularity and "
                                                      "zero-shot frozen BERT (default: yes, unless "
                                                      "--from-batch)")] = None,
    model: ModelOpt = "default", max_length: MaxLength = 64, batch_size: BatchSize = 64, decay: Decay = 0.7,
    ks: str = "10,20,50", splits: str = "valid,test",
    mask_history: Annotated[bool, typer.Option(help="remove history items from the ranking (not the published "
                                                    "protocol)")] = False,
    out: Annotated[Path, typer.Option(dir_okay=False, callback=writable_out,
                                      help="JSON results file")] = Path("results/evaluate.json"),
    from_batch: Annotated[Optional[Path], typer.Option(help="also score a `recsys batch-score --data D --split S` "
                                                            "output directory (S among --splits, k ≥ max K, "
                                                            "--keep-seen unless --mask-history)")] = None,
    int8: Annotated[bool, typer.Option(help="int8 dynamic quantisation of the zero-shot BERT (CPU)")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the results as JSON on stdout (no table)")]
    = False,
    encoder: EncoderOpt = "onnx-int8", pooling: PoolingOpt = "auto",
    threads: CpuThreads = None,
) -> None:
    """Full-ranking Recall/NDCG/MRR@K over the whole catalogue; prints a table and writes JSON."""
    from jobs.workflows import baseline_models, load_dataset
    from encoders.loading import open_recommender
    from recsys.bundle import Bundle
    from recsys.splits import split_dataset

    cap_cpu_threads(threads)
    config = _build_config(model, max_length, batch_size, decay, ks, splits, mask_history, int8=int8,
                           backend=encoder, pooling=pooling)
    step(f"reading the dataset {data} …")
    dataset = load_dataset(data)
    split = split_dataset(dataset)
    split.require_examples(config.eval.splits, f"evaluating on {' and '.join(config.eval.splits)} (--splits)")
    baselines = from_batch is None if baselines is None else baselines
    if not baselines and bundle is None and from_batch is None:
        raise typer.BadParameter("nothing to evaluate: pass --bundle or --from-batch, or keep --baselines")
    loaded, warnings, notes = None, [], []
    if bundle is not None:  # before the baselines' encoding, so a wrong path fails at once
        step(f"loading the bundle {bundle} …")
        opened = Bundle.open(bundle)
        loaded = open_recommender(opened)
        warnings, notes = _bundle_notes(bundle, opened.manifest, loaded, dataset, config.eval.splits)
    if from_batch is not None:  # before the baselines' encoding, so a --splits without the batch's split fails at once
        notes += _batch_notes(from_batch, config.eval.splits)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    if baselines:
        step(f"loading BERT ({model}) and encoding {dataset.items.height:,} item texts for the zero-shot baseline …")
    models: dict[str, object] = baseline_models(dataset, split, config) if baselines else {}
    if loaded is not None:
        models[f"bundle:{bundle.name}"] = loaded
    from jobs.workflows import evaluate_models
    rows = evaluate_models(models, split, config.eval) if models else []
    if from_batch is not None:
        from jobs.batch.evaluate import evaluate_batch
        rows += evaluate_batch(from_batch, dataset, split, config.eval)
    payload = {"dataset": dataset.summary(), "protocol": config.eval.model_dump(mode="json"),
               "config": config.model_dump(mode="json"), "results": rows, "markdown": markdown_metrics(rows),
               "warnings": warnings, "notes": notes}
    written = write_json(out, payload)
    if json_output:
        typer.echo(json.dumps(payload, indent=2, default=str))
        step(f"results → {written}")
        return
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"
                                      f"{' (history masked)' if mask_history else ''}"))
    console.print(f"results → {written}")


def _bundle_notes(bundle: Path, manifest: dict, recommender, dataset, splits) -> tuple[list[str], list[str]]:
    """(warnings, notes), printed and kept in the JSON. A warning (not an error: a later snapshot of the same shop
    is a fair test) when `bundle` (its `manifest`) was built on a dataset with another fingerprint; else the note a
    reader of the table must know: a re-ranker fit on this dataset's valid step makes the bundle's valid rows
    in-sample (optimistic), its test rows are not. The dataset is hashed once (it reads all of it)."""
    from jobs.workflows import built_on_other_dataset

    if built_on_other_dataset(manifest, dataset):
        return [f"the bundle {bundle} was built on another dataset (fingerprint differs from {dataset.name}'s): its "
                "catalogue, histories and statistics are not this dataset's, so targets it does not hold count as "
                "misses"], []
    if recommender.reranker is None:
        return [], []
    for name in splits:  # a split the statistics count is refused now, not after the note about its rows
        recommender.reranker.stats.config.check_unseen(name)
    if "valid" not in splits:
        return [], []
    return [], ["the bundle's re-ranker was fit on this dataset's valid step, so its valid rows are in-sample "
                "(optimistic); its test rows are held out. `recsys bench ranker-folds` gives a cross-fitted valid "
                "figure."]


def _batch_notes(out: Path, splits: tuple[str, ...]) -> list[str]:
    """The notes on a batch output's row (`jobs.batch.evaluate.batch_notes`); BatchError when `splits` (--splits)
    does not name the split it was scored for."""
    from jobs.batch.evaluate import batch_notes
    from jobs.batch.layout import read_batch_manifest

    return batch_notes(read_batch_manifest(out), out, splits)


@app.command()
def recommend(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    user: Annotated[Optional[str], typer.Option(help="known user id (an unknown one: an error, or --fallback)")] = None,
    items: Annotated[Optional[str], typer.Option(help="comma-separated recent item ids (anonymous session)")] = None,
    text: Annotated[Optional[str], typer.Option(help="free text, e.g. a search query (alone or with --items)")]
    = None,
    similar: Annotated[Optional[str], typer.Option(help="item id: show similar items")] = None,
    k: Annotated[int, typer.Option(min=1, max=MAX_K, help="items to show (the API's limit, RECSYS_MAX_K)")] = 10,
    fallback: Annotated[bool, typer.Option(help="an unknown --user gets the popular items (as in the API) "
                                                "instead of an error")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the API's JSON response instead of a table")]
    = False,
) -> None:
    """Print recommendations from a bundle: for a user, a session (--items and/or --text) or a product."""
    from types import SimpleNamespace

    from api.responses import to_response
    from encoders.loading import load_recommender
    from recsys.histories import stored_kinds

    if sum((user is not None, items is not None or text is not None, similar is not None)) != 1:
        raise typer.BadParameter("give exactly one of --user, --similar, or --items and/or --text")
    if text is not None and not text.strip():
        raise typer.BadParameter("--text is empty")
    recent = [i.strip() for i in (items or "").split(",") if i.strip()]
    if items is not None and not recent:
        raise typer.BadParameter(f"--items holds no item id: {items!r}")
    path = _resolve(bundle)
    step(f"loading the bundle {path} …")  # seconds (the towers, the index, the re-ranker): not a silent start
    recommender = load_recommender(path)
    history: list[str] = []
    kinds: dict[str, str] = {}
    if user is not None:
        try:
            result = recommender.recommend_user(user, k, fallback=fallback)
        except UnknownIdError as exc:
            raise RecsysError(f"{exc} (pass --fallback to show the popular items instead)") from None
        history, kinds = recommender.histories.get(user, []), stored_kinds(recommender.histories, user)
    elif text is not None:
        result, history = recommender.recommend_session(recent, k, text=text), recent
    elif items is not None:
        result, history = recommender.recommend_session(recent, k), recent
    else:
        result = recommender.similar_items(similar, k)
    response = to_response(SimpleNamespace(recommender=recommender, version=path.name), result, history,
                           anchor=similar, text=text, event_kinds=kinds)
    if json_output:
        typer.echo(response.model_dump_json(indent=2))
        return
    print_recommendations(response)


def _resolve(bundle: Path) -> Path:
    from recsys.artifacts import resolve_bundle
    return resolve_bundle(bundle)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Option(envvar="RECSYS_BUNDLE", show_envvar=True,
                                         help="bundle directory (or a model directory: newest version)")],
    host: str = "127.0.0.1", port: Port = 8000,
    access_log: Annotated[bool, typer.Option(help="log every request (costs throughput)")] = False,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (each loads the bundle; events, catalogue "
                                         "edits and reloads reach every worker through the event store within "
                                         "RECSYS_SYNC_INTERVAL_MS, 200 ms)")] = 1,
) -> None:
    """Serve the bundle with FastAPI + uvicorn; OpenAPI docs at /docs. With several workers on Linux, each worker
    listens on its own SO_REUSEPORT socket (`api.listeners`)."""
    import contextlib
    import copy
    import logging
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's, plus the service's own messages (in every worker)
    log_config["loggers"]["recsys"] = {"handlers": ["default"], "level": "INFO", "propagate": False}

    from api.app import create_app
    from api.service import make_store
    from api.settings import load_settings
    from api.store_check import check_same_shop
    from jobs.workflows import check_port, claim_port, run_server
    from recsys.artifacts import read_manifest, resolve_bundle
    check_port(host, port)  # a busy port fails now, not after loading the bundle
    claim = claim_port(port)  # noqa: F841  (held until serve returns: another serve starting meanwhile is refused)
    path = resolve_bundle(bundle)
    read_manifest(path)  # fail here, with a clear message, before starting the server
    settings = load_settings(bundle=path)  # so do bad settings and an event store that cannot be reached
    store = make_store(settings)
    try:
        check_same_shop(store, path, settings)  # the default ./recsys-state is shared by every bundle served here
    finally:
        store.close()
    if workers == 1:
        run_server(create_app(path, settings, check_shop=False), host=host, port=port, access_log=access_log,
                   log_config=log_config)
        return
    os.environ["RECSYS_BUNDLE"] = str(path)  # each worker builds its app from the settings
    from api.listeners import PerWorkerListener, reuse_port_supported
    from api.metrics import shared_across_workers
    if not reuse_port_supported():  # one socket shared by the workers
        with shared_across_workers():
            uvicorn.run("api.app:create_app", factory=True, host=host, port=port, access_log=access_log,
                        workers=workers, log_config=log_config)
        return
    from uvicorn.supervisors import Multiprocess
    config = uvicorn.Config("api.app:create_app", factory=True, host=host, port=port, access_log=access_log,
                            workers=workers, log_config=log_config)
    # uvicorn says where it listens when it binds the shared socket; here each worker binds its own, so say it here
    address = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d with %d workers (Press CTRL+C to quit)",
                                            address, port, workers)
    with contextlib.suppress(KeyboardInterrupt), shared_across_workers():  # /metrics: every worker's
        Multiprocess(config, sockets=[PerWorkerListener(host, port)]).run()  # type: ignore[list-item]


finish_commands(app, import_app, bench_app)  # every command registered above, the benchmarks' included
arrange_help(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
