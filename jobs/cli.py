"""`recsys` command line: import, build, evaluate, recommend, serve, quickstart (here), and every other command
module registered on the app of jobs/app.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# every command module registers its commands on the app when imported (jobs/app.py owns the app)
from jobs import (  # noqa: F401
    batch_cmd, bench_batch, bench_engine, bench_latency, bench_live, bench_quality, bench_ranker, ranker_cmd, train_cmd)
from jobs.app import app, friendly_errors, import_app
from jobs.output import console, markdown_metrics, metrics_table, write_json
from recsys.config import BuildConfig, EncoderConfig, EvalConfig, UserTowerConfig


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


def _report_import(dataset, out: Path) -> None:
    dataset.save(out)
    summary = dataset.summary()
    console.print(f"[green]imported[/] {summary['name']}: {summary['n_items']:,} items, {summary['n_users']:,} users, "
                  f"{summary['n_interactions']:,} interactions → {out}")
    for reason, count in dataset.report.dropped.items():
        console.print(f"  [yellow]dropped[/] {count:,} rows: {reason}")
    for note in dataset.report.notes:
        console.print(f"  note: {note}")


ModelOpt = Annotated[str, typer.Option(help="BERT: local HF directory, hub name, or 'default' (offline MiniLM)")]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]


@import_app.command("synthetic")
@friendly_errors
def import_synthetic(out: OutOpt = Path("data/shop"), users: int = 600, items: int = 900, seed: int = 0) -> None:
    """Generate the seeded synthetic shop (the embedded default data; synthetic, not real customers)."""
    from recsys.data.synthetic import generate_shop
    _report_import(generate_shop(n_users=users, n_items=items, seed=seed), out)


@import_app.command("recbole")
@friendly_errors
def import_recbole(directory: Path, out: OutOpt) -> None:
    """RecBole/UniSRec atomic files (*.text, *.item2index, *.user2index, *.{train,valid,test}.inter)."""
    from recsys.data.importers import import_recbole_sequential
    _report_import(import_recbole_sequential(directory), out)


@import_app.command("movielens")
@friendly_errors
def import_movielens(directory: Path, out: OutOpt) -> None:
    """RecBole atomic MovieLens (ml-100k.inter + ml-100k.item); title, year and genres become the text."""
    from recsys.data.importers import import_recbole_movielens
    _report_import(import_recbole_movielens(directory), out)


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
) -> None:
    """Plain CSV/Parquet with a column mapping and an item-text template."""
    from recsys.data.importers import import_table
    dataset = import_table(interactions, items, user_col=user_col, item_col=item_col, time_col=time_col,
                           item_id_col=item_id_col, text_col=text_col, text_template=text_template,
                           timestamp_format=timestamp_format)
    _report_import(dataset, out)


@app.command()
@friendly_errors
def build(
    data: Annotated[Path, typer.Option(help="dataset directory (recsys import) or raw RecBole/MovieLens directory")],
    out: OutOpt = Path("artifacts"),
    name: Annotated[Optional[str], typer.Option(help="bundle name (default: the dataset's)")] = None,
    model: ModelOpt = "default", max_length: int = 64, batch_size: int = 64,
    decay: Annotated[float, typer.Option(help="recency decay of the history pool")] = 0.7,
) -> None:
    """Encode the catalogue, build the index, evaluate, and write a bundle to OUT/NAME/VERSION."""
    from jobs.workflows import build_bundle, load_dataset
    config = _build_config(model, max_length, batch_size, decay)
    dataset = load_dataset(data)
    path, rows = build_bundle(dataset, config, out, name or dataset.name)
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"))
    console.print(f"[green]bundle written[/] → {path}")


@app.command("evaluate")
@friendly_errors
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="dataset directory or raw RecBole/MovieLens directory")],
    bundle: Annotated[Optional[Path], typer.Option(help="also evaluate this bundle")] = None,
    baselines: Annotated[Optional[bool], typer.Option("--baselines/--no-baselines", help="evaluate popularity and "
                                                      "zero-shot frozen BERT (default: yes, unless --from-batch)")] = None,
    model: ModelOpt = "default", max_length: int = 64, batch_size: int = 64, decay: float = 0.7,
    ks: str = "10,20,50", splits: str = "valid,test",
    mask_history: Annotated[bool, typer.Option(help="remove history items from the ranking (not the published protocol)")] = False,
    out: Annotated[Path, typer.Option(help="JSON results file")] = Path("results/evaluate.json"),
    from_batch: Annotated[Optional[Path], typer.Option(help="also score a `recsys batch-score --data D --split test` "
                                                            "output directory (k ≥ max K, --keep-seen unless --mask-history)")] = None,
    int8: Annotated[bool, typer.Option(help="int8 dynamic quantisation of the zero-shot BERT (CPU)")] = False,
) -> None:
    """Full-ranking Recall/NDCG/MRR@K over the whole catalogue; prints a table and writes JSON."""
    from jobs.workflows import baseline_models, load_dataset
    from encoders.loading import load_recommender
    from recsys.splits import split_dataset

    config = _build_config(model, max_length, batch_size, decay, ks, splits, mask_history, int8=int8)
    dataset = load_dataset(data)
    split = split_dataset(dataset)
    baselines = from_batch is None if baselines is None else baselines
    models: dict[str, object] = baseline_models(dataset, split, config) if baselines else {}
    if bundle is not None:
        models[f"bundle:{bundle.name}"] = load_recommender(bundle)
    if not models and from_batch is None:
        raise typer.BadParameter("nothing to evaluate: pass --bundle or --from-batch, or keep --baselines")
    from jobs.workflows import evaluate_models
    rows = evaluate_models(models, split, config.eval) if models else []
    if from_batch is not None:
        from jobs.batch.evaluate import evaluate_batch
        rows += evaluate_batch(from_batch, dataset, split, config.eval)
    console.print(metrics_table(rows, f"{dataset.name}: full ranking over {dataset.items.height:,} items"
                                      f"{' (history masked)' if mask_history else ''}"))
    payload = {"dataset": dataset.summary(), "protocol": config.eval.model_dump(mode="json"),
               "config": config.model_dump(mode="json"), "results": rows, "markdown": markdown_metrics(rows)}
    console.print(f"results → {write_json(out, payload)}")


@app.command()
@friendly_errors
def recommend(
    bundle: Annotated[Path, typer.Option(help="bundle directory")],
    user: Annotated[Optional[str], typer.Option(help="known user id")] = None,
    items: Annotated[Optional[str], typer.Option(help="comma-separated recent item ids (anonymous session)")] = None,
    similar: Annotated[Optional[str], typer.Option(help="item id: show similar items")] = None,
    k: int = 10,
) -> None:
    """Print recommendations from a bundle."""
    from encoders.loading import load_recommender
    if sum(x is not None for x in (user, items, similar)) != 1:
        raise typer.BadParameter("give exactly one of --user, --items, --similar")
    recommender = load_recommender(bundle)
    if user is not None:
        result = recommender.recommend_user(user, k)
    elif items is not None:
        result = recommender.recommend_session([i.strip() for i in items.split(",") if i.strip()], k)
    else:
        result = recommender.similar_items(similar, k)
    _print_recommendations(recommender, result)


def _print_recommendations(recommender, result) -> None:
    from rich.table import Table
    table = Table(title=f"strategy: {result.strategy}")
    for header in ("#", "item_id", "score", "title"):
        table.add_column(header)
    for rank, (record, score) in enumerate(zip(recommender.item_records(result.item_ids), result.scores), 1):
        table.add_row(str(rank), record["item_id"], f"{score:.3f}", (record.get("title") or record["text"])[:70])
    console.print(table)


@app.command()
@friendly_errors
def serve(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    host: str = "127.0.0.1", port: int = 8000,
    access_log: Annotated[bool, typer.Option(help="log every request (costs throughput)")] = False,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (each loads the bundle; events, catalogue "
                                         "edits and reloads reach every worker through the event store within "
                                         "RECSYS_SYNC_INTERVAL_MS, 200 ms)")] = 1,
) -> None:
    """Serve the bundle with FastAPI + uvicorn; OpenAPI docs at /docs."""
    import copy
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's, plus the service's own messages (in every worker)
    log_config["loggers"]["recsys"] = {"handlers": ["default"], "level": "INFO", "propagate": False}

    from api.app import create_app
    from recsys.artifacts import read_manifest, resolve_bundle
    path = resolve_bundle(bundle)
    read_manifest(path)  # fail here, with a clear message, before starting the server
    if workers == 1:
        uvicorn.run(create_app(path), host=host, port=port, access_log=access_log, log_config=log_config)
        return
    os.environ["RECSYS_BUNDLE"] = str(path)  # each worker builds its app from the settings
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, access_log=access_log, workers=workers,
                log_config=log_config)


@app.command()
@friendly_errors
def quickstart(
    out: OutOpt = Path("artifacts"),
    data_out: Annotated[Path, typer.Option(help="where the synthetic dataset is written")] = Path("data/shop"),
    model: ModelOpt = "default", users: int = 600, items: int = 900, seed: int = 0,
    serve_after: Annotated[bool, typer.Option("--serve", help="start the API afterwards")] = False,
    port: int = 8000,
) -> None:
    """Synthetic shop → BERT item embeddings → FAISS → evaluated bundle → sample recommendations."""
    from jobs.workflows import build_bundle
    from recsys.data.synthetic import generate_shop
    from encoders.loading import load_recommender

    dataset = generate_shop(n_users=users, n_items=items, seed=seed)
    _report_import(dataset, data_out)
    path, rows = build_bundle(dataset, _build_config(model, 64, 64, 0.7, seed=seed), out, "shop")
    console.print(metrics_table(rows, "synthetic shop: full ranking over the whole catalogue"))
    console.print(f"[green]bundle written[/] → {path}")
    recommender = load_recommender(path)
    user = next(iter(recommender.histories))
    history = recommender.histories[user][-3:]
    console.print(f"\nuser {user} recently bought: " + "; ".join(r.get("title") or r["text"]
                                                                for r in recommender.item_records(history)))
    _print_recommendations(recommender, recommender.recommend_user(user, 5))
    console.print(f"\nserve it: [bold]recsys serve --bundle {path}[/] (docs at http://127.0.0.1:{port}/docs)")
    if serve_after:
        import uvicorn

        from api.app import create_app
        uvicorn.run(create_app(path), host="127.0.0.1", port=port)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
