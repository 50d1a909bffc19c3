"""`recsys` command line: import, build, encode, train, evaluate, recommend, serve, quickstart, bench."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from pydantic import ValidationError
from rich.markup import escape

from api.settings import Settings
from jobs.bench import bench_app
from jobs.output import console, err_console, markdown_metrics, metrics_table, step, write_json
from recsys.config import BuildConfig, EncoderConfig, EvalConfig, UserTowerConfig
from recsys.errors import RecsysError, UnknownIdError

app = typer.Typer(help="BERT-based recommendation engine.", no_args_is_help=True, pretty_exceptions_enable=False)
import_app = typer.Typer(help="Import data into the canonical dataset format.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            typer.echo(f"bert-recsys {version('bert-recsys')}")
        except PackageNotFoundError:
            typer.echo("bert-recsys (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """BERT-based recommendation engine."""


def friendly_errors(func):
    """Turn the project's own errors (and invalid settings) into one clear line and exit code 2 (never a
    traceback); the message is printed as it is (no Rich markup, so `[distributed]` stays)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            err_console.print(f"[bold red]error:[/] invalid setting: {escape(problems)}")
            raise typer.Exit(2) from None
    return wrapper


def _api_max_k() -> int:
    """The API's limit on k (RECSYS_MAX_K), so the CLI accepts what the API accepts; its default when the
    environment's setting is invalid (the API reports that when it starts)."""
    try:
        return Settings().max_k
    except ValidationError:
        return Settings.model_fields["max_k"].default


MAX_K = _api_max_k()


def _ks(value: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in value.split(",") if k.strip()}))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter("k values must be positive")
    return ks


def _splits(value: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in splits if s not in ("valid", "test")]
    if bad or not splits:
        raise typer.BadParameter(f"splits must be valid and/or test, got {value!r}")
    return splits


def _build_config(model: str, max_length: int, batch_size: int, decay: float, ks: str = "10,20,50",
                  splits: str = "valid,test", mask_history: bool = False, seed: int = 0,
                  int8: bool = False) -> BuildConfig:
    return BuildConfig(
        encoder=EncoderConfig(model=model, max_length=max_length, batch_size=batch_size, quantize_int8=int8),
        user_tower=UserTowerConfig(recency_decay=decay),
        eval=EvalConfig(ks=_ks(ks), splits=_splits(splits), mask_history=mask_history),
        seed=seed,
    )


def _report_import(dataset, out: Path, overwrite: bool = False) -> None:
    from jobs.workflows import save_dataset

    save_dataset(dataset, out, overwrite)
    summary = dataset.summary()
    console.print(f"[green]imported[/] {summary['name']}: {summary['n_items']:,} items, {summary['n_users']:,} users, "
                  f"{summary['n_interactions']:,} interactions → {out}")
    for reason, count in dataset.report.dropped.items():
        console.print(f"  [yellow]dropped[/] {count:,} rows: {escape(reason)}")
    if dataset.report.rejected.height:
        console.print(f"  [yellow]rejected[/] {dataset.report.rejected.height:,} bad rows → {out / 'rejected.csv'}")
        for reason, count in dataset.report.rejected_counts().items():
            console.print(f"    {count:,} × {escape(reason)}")
    for note in dataset.report.notes:
        console.print(f"  note: {escape(note)}")


ModelOpt = Annotated[str, typer.Option(help="BERT: local HF directory, hub name, or 'default' (offline MiniLM)")]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace a dataset already in --out")]
MaxLength = Annotated[int, typer.Option(min=8, max=512, help="BERT tokens per item text")]
BatchSize = Annotated[int, typer.Option(min=1, max=4096, help="texts per BERT batch")]
Decay = Annotated[float, typer.Option(min=0.01, max=1.0, help="recency decay of the history pool")]
Seed = Annotated[int, typer.Option(min=0, help="random seed")]
Users = Annotated[int, typer.Option(min=1, max=10_000_000, help="synthetic customers")]
Items = Annotated[int, typer.Option(min=32, max=10_000_000, help="synthetic products (at least 2 per category)")]
Port = Annotated[int, typer.Option(min=1, max=65_535)]


@import_app.command("synthetic")
@friendly_errors
def import_synthetic(out: OutOpt = Path("data/shop"), users: Users = 600, items: Items = 900, seed: Seed = 0,
                     overwrite: OverwriteOpt = False) -> None:
    """Generate the seeded synthetic shop (the embedded default data; synthetic, not real customers)."""
    from recsys.data.synthetic import generate_shop
    _report_import(generate_shop(n_users=users, n_items=items, seed=seed), out, overwrite)


@import_app.command("recbole")
@friendly_errors
def import_recbole(directory: Path, out: OutOpt, overwrite: OverwriteOpt = False) -> None:
    """RecBole/UniSRec atomic files (*.text, *.item2index, *.user2index, *.{train,valid,test}.inter)."""
    from recsys.data.importers import import_recbole_sequential
    _report_import(import_recbole_sequential(directory), out, overwrite)


@import_app.command("movielens")
@friendly_errors
def import_movielens(directory: Path, out: OutOpt, overwrite: OverwriteOpt = False) -> None:
    """RecBole atomic MovieLens (ml-100k.inter + ml-100k.item); title, year and genres become the text."""
    from recsys.data.importers import import_recbole_movielens
    _report_import(import_recbole_movielens(directory), out, overwrite)


@import_app.command("table")
@friendly_errors
def import_table_cmd(
    interactions: Annotated[Path, typer.Option(help="CSV or Parquet with user, item, timestamp columns")],
    items: Annotated[Path, typer.Option(help="CSV or Parquet item table")],
    out: OutOpt,
    user_col: str = "user_id", item_col: str = "item_id", time_col: str = "timestamp",
    item_id_col: str = "item_id",
    text_col: Annotated[Optional[str], typer.Option(help="one column holding the item text")] = None,
    text_template: Annotated[Optional[str], typer.Option(help="e.g. 'title: {title} | brand: {brand}'")] = None,
    timestamp_format: Annotated[Optional[str], typer.Option(help="strftime format for string timestamps")] = None,
    on_bad_rows: Annotated[Literal["fail", "skip"], typer.Option(help="fail: stop and list every bad row; skip: "
                                                                 "import the rest, bad rows → OUT/rejected.csv")]
    = "fail",
    delimiter: Annotated[Optional[str], typer.Option(help="field separator of CSV/TXT files: one character, or "
                                                          "tab / comma / semicolon / pipe (default: tab for .tsv, "
                                                          "else comma)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of CSV/TSV/TXT files, e.g. latin-1, cp1252")] = "utf-8",
    overwrite: OverwriteOpt = False,
) -> None:
    """Plain CSV/TSV/Parquet with a column mapping and an item-text template."""
    from recsys.data.importers import import_table
    try:
        dataset = import_table(interactions, items, user_col=user_col, item_col=item_col, time_col=time_col,
                               item_id_col=item_id_col, text_col=text_col, text_template=text_template,
                               timestamp_format=timestamp_format, on_bad_rows=on_bad_rows, delimiter=delimiter,
                               encoding=encoding)
    except ValueError as exc:  # a bad option value (delimiter, encoding, template)
        raise typer.BadParameter(str(exc)) from None
    _report_import(dataset, out, overwrite)


@app.command()
@friendly_errors
def build(
    data: Annotated[Path, typer.Option(help="dataset directory (recsys import) or raw RecBole/MovieLens directory")],
    out: OutOpt = Path("artifacts"),
    name: Annotated[Optional[str], typer.Option(help="bundle name (default: the dataset's)")] = None,
    model: ModelOpt = "default", max_length: MaxLength = 64, batch_size: BatchSize = 64, decay: Decay = 0.7,
    engine: Annotated[str, typer.Option(help="encode the catalogue here (local) or on Ray (ray: resumable "
                                              "shards in OUT/NAME/runs/encode)")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, help="ray: actors (default: all CPUs / one per GPU)")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: cluster address (default: a local Ray)")] = None,
) -> None:
    """Encode the catalogue, build the index, evaluate, and write a bundle to OUT/NAME/VERSION."""
    from jobs.encode_cmd import encode_options
    from jobs.workflows import build_bundle, load_dataset
    config = _build_config(model, max_length, batch_size, decay)
    step(f"reading the dataset {data} …")
    dataset = load_dataset(data)
    name = name or dataset.name
    encode = None if engine == "local" else encode_options(out / name / "runs" / "encode", engine, workers, 1,
                                                           ray_address, overwrite=True)
    step(f"loading BERT ({model}) and encoding {dataset.items.height:,} item texts"
         f"{' on Ray' if encode is not None else ''} …")
    path, rows = build_bundle(dataset, config, out, name, encode=encode)
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"))
    console.print(f"[green]bundle written[/] → {path}")


@app.command("evaluate")
@friendly_errors
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="dataset directory or raw RecBole/MovieLens directory")],
    bundle: Annotated[Optional[Path], typer.Option(help="also evaluate this bundle")] = None,
    baselines: Annotated[Optional[bool], typer.Option("--baselines/--no-baselines", help="evaluate popularity and "
                                                      "zero-shot frozen BERT (default: yes, unless --from-batch)")] = None,
    model: ModelOpt = "default", max_length: MaxLength = 64, batch_size: BatchSize = 64, decay: Decay = 0.7,
    ks: str = "10,20,50", splits: str = "valid,test",
    mask_history: Annotated[bool, typer.Option(help="remove history items from the ranking (not the published protocol)")] = False,
    out: Annotated[Path, typer.Option(help="JSON results file")] = Path("results/evaluate.json"),
    from_batch: Annotated[Optional[Path], typer.Option(help="also score a `recsys batch-score --data D --split test` "
                                                            "output directory (k ≥ max K, --keep-seen unless --mask-history)")] = None,
    int8: Annotated[bool, typer.Option(help="int8 dynamic quantisation of the zero-shot BERT (CPU)")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the results as JSON on stdout (no table)")]
    = False,
) -> None:
    """Full-ranking Recall/NDCG/MRR@K over the whole catalogue; prints a table and writes JSON."""
    from jobs.workflows import baseline_models, load_dataset
    from encoders.loading import load_recommender
    from recsys.splits import split_dataset

    config = _build_config(model, max_length, batch_size, decay, ks, splits, mask_history, int8=int8)
    step(f"reading the dataset {data} …")
    dataset = load_dataset(data)
    split = split_dataset(dataset)
    baselines = from_batch is None if baselines is None else baselines
    if baselines:
        step(f"loading BERT ({model}) and encoding {dataset.items.height:,} item texts for the zero-shot baseline …")
    models: dict[str, object] = baseline_models(dataset, split, config) if baselines else {}
    if bundle is not None:
        step(f"loading the bundle {bundle} …")
        models[f"bundle:{bundle.name}"] = load_recommender(bundle)
    if not models and from_batch is None:
        raise typer.BadParameter("nothing to evaluate: pass --bundle or --from-batch, or keep --baselines")
    from jobs.workflows import evaluate_models
    rows = evaluate_models(models, split, config.eval) if models else []
    if from_batch is not None:
        from jobs.batch.evaluate import evaluate_batch
        rows += evaluate_batch(from_batch, dataset, split, config.eval)
    payload = {"dataset": dataset.summary(), "protocol": config.eval.model_dump(mode="json"),
               "config": config.model_dump(mode="json"), "results": rows, "markdown": markdown_metrics(rows)}
    written = write_json(out, payload)
    if json_output:
        typer.echo(json.dumps(payload, indent=2, default=str))
        step(f"results → {written}")
        return
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"
                                      f"{' (history masked)' if mask_history else ''}"))
    console.print(f"results → {written}")


@app.command()
@friendly_errors
def recommend(
    bundle: Annotated[Path, typer.Option(help="bundle directory")],
    user: Annotated[Optional[str], typer.Option(help="known user id")] = None,
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
    from encoders.loading import item_text_encoder, load_recommender

    if sum(x is not None for x in (user, items or text, similar)) != 1:
        raise typer.BadParameter("give exactly one of --user, --similar, or --items and/or --text")
    if text is not None and not text.strip():
        raise typer.BadParameter("--text is empty")
    path = _resolve(bundle)
    recommender = load_recommender(path)
    recent = [i.strip() for i in (items or "").split(",") if i.strip()]
    history: list[str] = []
    if user is not None:
        try:
            result = recommender.recommend_user(user, k, fallback=fallback)
        except UnknownIdError as exc:
            raise RecsysError(f"{exc} (pass --fallback to show the popular items instead)") from None
        history = recommender.histories.get(user, [])
    elif text is not None:
        text_vector = item_text_encoder(recommender, path).encode([text])[0]
        result, history = recommender.recommend_session(recent, k, text_vector=text_vector), recent
    elif items is not None:
        result, history = recommender.recommend_session(recent, k), recent
    else:
        result = recommender.similar_items(similar, k)
    response = to_response(SimpleNamespace(recommender=recommender, version=path.name), result, history,
                           anchor=similar, text=text)
    if json_output:
        typer.echo(response.model_dump_json(indent=2))
        return
    _print_recommendations(response)


def _resolve(bundle: Path) -> Path:
    from recsys.artifacts import resolve_bundle
    return resolve_bundle(bundle)


def _print_recommendations(response) -> None:
    from rich.table import Table
    table = Table(title=f"strategy: {response.strategy}")
    for header in ("#", "item_id", "score", "title", "why"):
        table.add_column(header)
    for rank, item in enumerate(response.items, 1):
        table.add_row(str(rank), item.item_id, f"{item.score:.3f}", escape((item.title or item.text)[:60]),
                      escape(item.reason))
    console.print(table)


@app.command()
@friendly_errors
def serve(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    host: str = "127.0.0.1", port: Port = 8000,
    access_log: Annotated[bool, typer.Option(help="log every request (costs throughput)")] = False,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (each loads the bundle; events are "
                                         "shared through the store, admin catalogue edits reach the worker "
                                         "that took them and the others on their next reload)")] = 1,
) -> None:
    """Serve the bundle with FastAPI + uvicorn; OpenAPI docs at /docs."""
    import copy
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's, plus the service's own messages (in every worker)
    log_config["loggers"]["recsys"] = {"handlers": ["default"], "level": "INFO", "propagate": False}

    from api.app import create_app
    from api.service import make_store
    from api.settings import load_settings
    from jobs.workflows import check_port
    from recsys.artifacts import read_manifest, resolve_bundle
    check_port(host, port)  # a busy port fails now, not after loading the bundle
    path = resolve_bundle(bundle)
    read_manifest(path)  # fail here, with a clear message, before starting the server
    settings = load_settings(bundle=path)  # so do bad settings and an event store that cannot be reached
    make_store(settings).close()
    if workers == 1:
        uvicorn.run(create_app(path, settings), host=host, port=port, access_log=access_log, log_config=log_config)
        return
    os.environ["RECSYS_BUNDLE"] = str(path)  # each worker builds its app from the settings
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, access_log=access_log, workers=workers,
                log_config=log_config)


from jobs import batch_cmd, bench_batch  # noqa: E402,F401  (register `recsys batch-score`, `recsys bench batch`)
from jobs import bench_quality, train_cmd  # noqa: E402,F401  (register `recsys train`, `recsys bench quality`)
from jobs import bench_ranker, ranker_cmd  # noqa: E402,F401  (register `recsys train-ranker`, `recsys bench ranker`)
from jobs import bench_engine, bench_latency  # noqa: E402,F401  (register `recsys bench engine`, `… latency`)
from jobs import export_cmd, quickstart  # noqa: E402,F401  (register `recsys export`, `recsys quickstart`)
from jobs import bench_gpu, encode_cmd  # noqa: E402,F401  (register `recsys encode`, `recsys bench gpu`)
from jobs import bench_store  # noqa: E402,F401  (register `recsys bench store`)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
