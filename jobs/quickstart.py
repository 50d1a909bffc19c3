"""`recsys quickstart`: the whole engine on the embedded synthetic shop in a few minutes on 2 CPU cores.

Synthetic shop → a short training of the BERT towers (`quickstart` preset) → the LightGBM re-ranker → the
evaluation table (popularity, zero-shot BERT, the trained towers, the engine = towers + re-ranker; full ranking
over the whole catalogue, test split) with a PNG chart → a bundle → sample lists with their reasons.

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from jobs.app import MAX_K, Items, ModelOpt, OutOpt, Port, Seed, Users, app
from jobs.output import console, print_recommendations, step
from jobs.paths import writable_out
from recsys.text_format import counted

RESULT_MODELS = {"popularity": "popularity", "zero-shot-bert": "zero-shot BERT", "towers": "trained towers",
                 "engine": "engine (towers + re-ranker)"}


@app.command()
def quickstart(
    out: OutOpt = Path("artifacts"),
    data_out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                           help="where the synthetic dataset is written (a "
                                                                 "synthetic shop already there is replaced)")]
    = Path("data/shop"),
    results: Annotated[Path, typer.Option(file_okay=False, help="quickstart.json / .md / .png: the evaluation "
                                                                "table and chart")]
    = Path("results/quickstart"),
    model: ModelOpt = "default", users: Users = 600, items: Items = 900, seed: Seed = 0,
    threads: Annotated[int, typer.Option(min=1, max=256, help="CPU threads (torch, FAISS, BLAS)")] = 2,
    k: Annotated[int, typer.Option(min=1, max=MAX_K, help="items in the sample lists")] = 5,
    serve_after: Annotated[bool, typer.Option("--serve", help="start the API afterwards")] = False,
    port: Port = 8000,
) -> None:
    """Synthetic shop → short BERT-tower training → re-ranker → evaluation table + chart → bundle → sample lists."""
    from jobs.workflows import check_port, quickstart_dataset

    started = time.perf_counter()
    if serve_after:
        check_port("127.0.0.1", port)
    from jobs.threads import limit_cpu_threads

    limit_cpu_threads(threads)
    dataset = quickstart_dataset(users, items, seed, data_out)
    run = _train_and_evaluate(dataset, model, seed, out)
    minutes = (time.perf_counter() - started) / 60
    _report(run, results, minutes, threads)
    _samples(run["recommender"], run["path"], dataset, k)
    console.print(f"\n[green]done in {minutes:.1f} min[/] · serve it: [bold]recsys serve --bundle {run['path']}[/] "
                  f"(docs at http://127.0.0.1:{port}/docs)")
    if serve_after:
        from api.app import create_app
        from jobs.workflows import run_server

        run_server(create_app(run["path"]), host="127.0.0.1", port=port)


def _train_and_evaluate(dataset, model: str, seed: int, out: Path) -> dict:
    """Baselines, towers, re-ranker: their test rows (all users and the cold-start slice) and the saved bundle."""
    from benchmarks.quality import ranked_rows
    from encoders.experiment import evaluate_slices, train_and_evaluate, train_record
    from encoders.presets import preset
    from jobs.workflows import baseline_models
    from recsys.artifacts import new_version
    from recsys.config import BuildConfig, EncoderConfig, EvalConfig
    from recsys.errors import DataError
    from recsys.splits import split_dataset

    split = split_dataset(dataset)
    eval_config = EvalConfig(splits=("test",))
    step(f"zero-shot baseline: loading BERT ({model}) and encoding {dataset.items.height:,} item texts …")
    t0 = time.perf_counter()
    baselines = baseline_models(dataset, split, BuildConfig(encoder=EncoderConfig(model=model), seed=seed))
    rows = [{**r, "seconds": time.perf_counter() - t0} for r in evaluate_slices(baselines, split, eval_config)]
    step("training the BERT towers (quickstart preset: LoRA on the top layer, sequence user tower) …")
    config = preset("quickstart", encoder={"model": model}, seed=seed)
    trained = train_and_evaluate(dataset, split, config, name="shop", eval_config=eval_config)
    rows += [{**r, "model": "towers", "seconds": trained.result.seconds} for r in trained.rows]
    step("fitting the LightGBM re-ranker on the validation step …")
    try:
        ranked = ranked_rows(trained.recommender, split, eval_config.ks, seed, progress=False)
    except DataError as error:  # too few valid queries with a hit: the shop's size is the quickstart's lever
        customers = counted(dataset.n_users, "customer")
        raise DataError(f"{error.problem}; the synthetic shop of {customers} is too small for it: pass a larger "
                        "--users (the default is 600)") from None
    rows += [{**r, "model": "engine", "seconds": trained.result.seconds + r["ranker_seconds"]} for r in ranked]
    manifest = {"name": "shop", "dataset": {**dataset.summary(), "fingerprint": dataset.fingerprint()},
                "metrics": rows, "train": train_record(config, trained.result, trained.blend)}  # (`recsys refit`)
    path = trained.recommender.save(out / "shop" / new_version(), manifest)
    return {"rows": rows, "recommender": trained.recommender, "path": path, "stopped": trained.result.stopped}


def _report(run: dict, results: Path, minutes: float, threads: int) -> None:
    """The test table (all users) on the console; JSON + Markdown (+ cold-start slice) + PNG under `results`."""
    import os

    from benchmarks.common import environment, write_report
    from benchmarks.quality import COLUMNS, bar_chart, ranked_suffix
    from jobs.output import metrics_table

    rows = [{**r, "model": RESULT_MODELS[r["model"]] + ranked_suffix(r), "table": f"{r['split']} · {r['slice']}"}
            for r in run["rows"]]
    shown = [r for r in rows if r["slice"] == "all"]
    console.print(metrics_table(shown, "synthetic shop, test split: full ranking over the whole catalogue"))
    by_model = {r["model"]: r for r in shown}
    engine, popularity = by_model[RESULT_MODELS["engine"]], by_model["popularity"]  # the engine as served
    console.print(f"the engine vs popularity on test NDCG@10: {engine['ndcg@10']:.4f} vs {popularity['ndcg@10']:.4f} "
                  f"({engine['ndcg@10'] / max(popularity['ndcg@10'], 1e-12):.1f}×), Recall@10 "
                  f"{engine['recall@10']:.4f} vs {popularity['recall@10']:.4f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    notes = [f"`recsys quickstart` end to end in {minutes:.1f} min with {threads} torch threads (load average "
             f"{load:.2f} at the end)" if load is not None else f"end to end in {minutes:.1f} min",
             "full ranking over every catalogue item, history not masked; the engine = the trained towers' top "
             "candidates re-ordered by the LightGBM re-ranker (fitted on the valid step), its list as served "
             "(diversified); `(statistics through valid)`: the same ranker with its statistics refit through the "
             "valid step, as a serving shop has them; `(no diversification)`: the engine's list in ranked order"]
    if run["stopped"] == "time budget":  # the trainer printed why; the report says so too
        notes.append("the towers' training was stopped by its time budget before early stopping: on a quieter or "
                     "faster machine it trains more epochs, and these figures are higher")
    paths = write_report(results, "quickstart", rows, [c for c in COLUMNS if c.key not in ("train_minutes",
                         "trainable_params", "total_params", "blend_weight")], title="Quickstart: the synthetic shop",
                         meta={"environment": environment(), "minutes": round(minutes, 2), "threads": threads,
                               "bundle": str(run["path"])}, group_by="table", notes=notes, chart=bar_chart)
    console.print("results → " + ", ".join(str(p) for p in paths.values()))


def _samples(recommender, path: Path, dataset, k: int) -> None:
    """A customer whose last item is a main product (camera, laptop, …): their recent items and their list, and the
    similar items of that product."""
    from types import SimpleNamespace

    from api.responses import to_response
    from recsys.data.synthetic import CATEGORIES

    mains = {c for c, spec in CATEGORIES.items() if spec.accessories}
    category = dict(zip(dataset.items["item_id"].to_list(), dataset.items["category"].to_list()))
    user = next((u for u, h in recommender.histories.items() if category.get(h[-1]) in mains),
                next(iter(recommender.histories)))
    history = recommender.histories[user]
    loaded = SimpleNamespace(recommender=recommender, version=path.name)
    console.print(f"\ncustomer {user} recently: " + "; ".join(r.get("title") or r["text"]
                                                             for r in recommender.item_records(history[-3:])))
    print_recommendations(to_response(loaded, recommender.recommend_user(user, k), history))
    anchor = history[-1]
    console.print(f"similar to {recommender.item_records([anchor])[0].get('title')}:")
    print_recommendations(to_response(loaded, recommender.similar_items(anchor, k), anchor=anchor))
