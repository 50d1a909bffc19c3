"""`recsys export`: a bundle's item vectors (Parquet) and item tower (ONNX, parity-checked) for use elsewhere.

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Annotated

import typer

from jobs.app import app
from jobs.output import console, step
from jobs.paths import writable_out
from recsys.errors import RecsysError
from recsys.text_format import counted

ONNX_HINT = "the ONNX export needs onnx and onnxruntime: pip install 'bert-recsys[onnx]' (in a clone: pip install " \
            "-e '.[onnx]'), or pass --no-onnx"


@app.command("export")
def export(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, callback=writable_out,
                                      help="new (or empty) directory for the exported "
                                                                     "files")],
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also export the item tower as ONNX")] = True,
    parity_texts: Annotated[int, typer.Option(min=1, max=10_000, help="catalogue texts the ONNX graph is checked "
                                                                      "on against the PyTorch tower")] = 64,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier export in --out")] = False,
) -> None:
    """items.parquet (item_id, attributes, vector), item_tower.onnx (+ tokenizer) and export.json."""
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle

    if onnx:
        try:
            import onnx as _onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RecsysError(ONNX_HINT) from None
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / "export.json").is_file()):
        raise RecsysError(f"{out} is not empty" + ("" if (out / "export.json").is_file() else " and holds no export")
                          + ": choose a new --out" + (", or pass --overwrite" if (out / "export.json").is_file()
                                                      else ""))
    path = resolve_bundle(bundle)
    step(f"loading the bundle {path} …")
    recommender = load_recommender(path)
    from encoders.export import export_bundle

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        step("writing the item vectors" + (" and the ONNX item tower (parity check on catalogue texts) …" if onnx
                                           else " …"))
        info = export_bundle(recommender, tmp, onnx, parity_texts)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"[green]exported[/] {info['vectors']['rows']:,} item vectors ({info['vectors']['dim']}-d) → "
                  f"{out / 'items.parquet'}")
    for entry in info["onnx"]:
        parity = entry["parity"]
        tied = f"; {counted(parity['tied_texts'], 'text')} left out, whose nearest items tie" \
            if parity.get("tied_texts") else ""
        console.print(f"  {entry['file']}: {entry['dim']}-d, max |ONNX − PyTorch| {parity['max_abs_diff']:.1e}"
                      f" on {counted(parity['texts'], 'text')}{tied} (tokenizer: {entry['tokenizer']}/, max_length "
                      f"{entry['max_length']})")
        codes = entry.get("id_codes")
        if codes:
            checked = codes["parity"]
            console.print(f"    {codes['codes']}: the ID codes of {counted(codes['rows'], 'trained item')} (a new text "
                          f"of one: its `{codes['output']}` output with its code, {codes['fusion']}), max |ONNX − "
                          f"PyTorch| {checked['max_abs_diff']:.1e} on {counted(checked['texts'], 'text')}")
        own = entry.get("own_neighbours")
        if own:
            checked = own["parity"]
            console.print(f"    {own['means']}: the own neighbours of {counted(own['items'], 'trained item')} (a new "
                          f"text of one: its rows as the graph's {' and '.join(own['inputs'])} inputs, "
                          f"encoders.export.own_neighbour_inputs; zeros for any other text), max |ONNX − PyTorch| "
                          f"{checked['max_abs_diff']:.1e} on {counted(checked['texts'], 'text')}")
