"""`recsys push-items`: a shop's item file (a catalogue feed) upserted into a running API in batches of `POST
/v1/admin/items` (each batch recorded and applied all or none; every worker follows). The file is read as `import
table` reads an item file (the same column mapping, item-text template and bad-row handling); the API's OpenAPI
document says which of title / category / brand / price its catalogue keeps, how long a text may be and how many
items one request may carry, so a file that breaks them is refused before anything is sent."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal, Optional

import httpx
import polars as pl
import typer

from jobs.app import app
from jobs.options import bad_option_value
from jobs.output import console
from recsys.errors import DataError
from recsys.text_format import counted

ATTRIBUTES = ("title", "category", "brand", "price")
RETRIES = 3
"""Tries of a batch the API answers 503 ("retry shortly") or that does not reach it, waiting 1, 2, 4 s between."""


def client_for(url: str, token: str | None, timeout_s: float) -> httpx.Client:
    """The HTTP client of one push (tests replace it with one bound to an app in process)."""
    return httpx.Client(base_url=url, timeout=timeout_s,
                        headers={"Authorization": f"Bearer {token}"} if token else {})


def contract(client: httpx.Client) -> tuple[set[str], int, int]:
    """(the item attributes the served catalogue keeps, the longest text, the most upserts a request) from the API's
    OpenAPI document."""
    try:
        response = client.get("/openapi.json")
    except httpx.HTTPError as exc:
        raise DataError(f"cannot reach the API at {client.base_url}: {exc}") from None
    if response.status_code != 200:
        raise DataError(f"{client.base_url}/openapi.json answered HTTP {response.status_code}: is this a recsys API?")
    schemas = response.json().get("components", {}).get("schemas", {})
    if "ItemRecord" not in schemas or "ItemChanges" not in schemas:
        raise DataError(f"the API at {client.base_url} takes no catalogue feeds (no POST /v1/admin/items): "
                        "serve the bundle with a newer recsys")
    record = schemas["ItemRecord"]["properties"]
    kept = {name for name in ATTRIBUTES if name in record}
    return kept, int(record["text"].get("maxLength", 10**9)), int(
        schemas["ItemChanges"]["properties"]["upsert"].get("maxItems", 10**9))


def records_of(items: pl.DataFrame, kept: set[str]) -> list[dict]:
    """One upsert record per item: item_id, text and the kept attributes it has (nulls left out)."""
    columns = ["item_id", "text", *(name for name in ATTRIBUTES if name in kept and name in items.columns)]
    return [{key: value for key, value in row.items() if value is not None}
            for row in items.select(columns).iter_rows(named=True)]


class TooLarge(DataError):
    """The API answered 413: the request's body is over its RECSYS_MAX_BODY_BYTES."""


def send(client: httpx.Client, batch: Sequence, first_row: int, key: str = "upsert",
         sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """POST one batch of `key` changes (upserts, or ids to deactivate / delete) and return the API's answers: a
    batch whose body the API finds too large (413) is sent again as two halves, down to one entry. Retries a 503 or
    a failed connection; DataError naming the batch's entries for any other refusal (the batch changed nothing)."""
    what = (f"items {first_row:,}–{first_row + len(batch) - 1:,} of the file were" if key == "upsert" else
            f"the {key} of served items {first_row:,}–{first_row + len(batch) - 1:,} not in the file was")
    try:
        return [post_changes(client, {key: list(batch)}, what, sleep)]
    except TooLarge:
        if len(batch) == 1:
            raise DataError(f"{what} refused: one entry alone is over the API's body limit (RECSYS_MAX_BODY_BYTES); "
                            "it and the changes after it were not made") from None
    half = len(batch) // 2
    return send(client, batch[:half], first_row, key, sleep) + send(client, batch[half:], first_row + half, key, sleep)


def post_changes(client: httpx.Client, body: dict, what: str, sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST /v1/admin/items with `body`; retries a 503 or a failed connection; DataError saying `what` was refused
    for any other answer (the request changed nothing)."""
    for attempt in range(RETRIES):
        try:
            response = client.post("/v1/admin/items", json=body)
        except httpx.TransportError as exc:
            problem = f"did not reach the API ({type(exc).__name__}: {exc})"
        else:
            if response.status_code == 200:
                return response.json()
            problem = f"HTTP {response.status_code}: {_detail(response)}"
            if response.status_code == 413:
                raise TooLarge(f"{what} refused ({problem})")
            if response.status_code != 503:
                break
        if attempt < RETRIES - 1:
            sleep(2.0 ** attempt)
    raise DataError(f"{what} refused ({problem}); they and the changes after them were not made")


def served_ids(client: httpx.Client) -> tuple[list[str], list[str]]:
    """(active, inactive) ids of the served catalogue (GET /v1/admin/items)."""
    try:
        response = client.get("/v1/admin/items")
    except httpx.HTTPError as exc:
        raise DataError(f"cannot reach the API at {client.base_url}: {exc}") from None
    if response.status_code != 200:
        raise DataError(f"listing the served catalogue (GET /v1/admin/items, for --missing) answered HTTP "
                        f"{response.status_code}: {_detail(response)}")
    body = response.json()
    return body["active"], body["inactive"]


def missing_items(listed: set[str], active: Sequence[str], inactive: Sequence[str], missing: str) -> list[str]:
    """The served items the file does not list that `missing` changes: deactivate → the active ones, delete → all,
    keep → none."""
    if missing == "keep":
        return []
    served = list(active) if missing == "deactivate" else [*active, *inactive]
    return [item_id for item_id in served if item_id not in listed]


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


@app.command("push-items")
def push_items(
    url: Annotated[str, typer.Option(help="the API's base URL, e.g. http://localhost:8000")],
    items: Annotated[Path, typer.Option(help="CSV/TSV/TXT or Parquet item file (as `import table --items` reads)")],
    token: Annotated[Optional[str], typer.Option(envvar="RECSYS_ADMIN_TOKEN", show_default=False,
                                                 help="the API's admin token (default: RECSYS_ADMIN_TOKEN)")] = None,
    item_id_col: Annotated[str, typer.Option(help="the item file's id column")] = "item_id",
    text_col: Annotated[Optional[str], typer.Option(help="one column holding the item text")] = None,
    text_template: Annotated[Optional[str], typer.Option(help="e.g. 'title: {title} | brand: {brand}'")] = None,
    on_bad_rows: Annotated[Literal["fail", "skip"], typer.Option(help="fail: stop and list every bad row; skip: "
                                                                 "push the rest")] = "fail",
    delimiter: Annotated[Optional[str], typer.Option(help="field separator of CSV/TXT files (default: tab for "
                                                          ".tsv, else comma)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of CSV/TSV/TXT files")] = "utf-8",
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="items a request (at most the API's "
                                                                    "RECSYS_MAX_BATCH_ITEMS)")] = 500,
    timeout_s: Annotated[float, typer.Option(min=1.0, help="the longest wait for one request")] = 300.0,
    missing: Annotated[Literal["keep", "deactivate", "delete"], typer.Option(
        help="the served items the file does not list: keep them, deactivate them (out of stock) or delete them "
             "(after the upserts)")] = "keep",
    max_missing: Annotated[float, typer.Option(min=0.0, max=1.0, help="--missing: refuse, before any change, "
                                               "when the items it would change are more than this share of the "
                                               "served catalogue (a truncated file would empty the shop)")] = 0.5,
    dry_run: Annotated[bool, typer.Option(help="read and check the file against the API, send nothing")] = False,
) -> None:
    """Upsert a shop's item file into a running API (a catalogue feed): batches of POST /v1/admin/items; with
    --missing, deactivate or delete the served items the file does not list."""
    from recsys.data.bad_rows import LISTED, BadRows
    from recsys.data.dataset import ImportReport
    from recsys.data.option_names import PUSH_ITEMS_FLAGS
    from recsys.data.tables import read_item_table

    bad = BadRows(on_bad_rows, skip_hint="push the other rows with --on-bad-rows skip: the bad ones are listed "
                                          "and their items left as served")
    try:
        frame, listed = read_item_table(items, ImportReport(), bad, item_id_col=item_id_col,
                                        text_template=text_template, text_col=text_col, delimiter=delimiter,
                                        encoding=encoding, names=PUSH_ITEMS_FLAGS)
    except ValueError as exc:  # a bad option value (delimiter, encoding, template)
        raise bad_option_value(exc) from None
    skipped = bad.rejected().height
    if skipped:
        console.print(f"skipped {counted(skipped, 'bad row')} of {items.name} (their items are left as served):")
        for row, problem in bad.described():
            console.print(f"  row {row}: {problem}")
        if skipped > LISTED:
            console.print(f"  … and {skipped - LISTED:,} more")
    with client_for(url, token, timeout_s) as client:
        kept, max_text, max_items = contract(client)
        dropped = [name for name in ATTRIBUTES if name in frame.columns and name not in kept]
        if dropped:
            console.print(f"note: the served catalogue keeps no {', '.join(dropped)} (no such column, and its "
                          "item-text template does not use one): the file's are not sent")
        long = frame.filter(pl.col("text").str.len_chars() > max_text)
        if long.height:
            shown = ", ".join(repr(i) for i in long["item_id"].head(5).to_list())
            raise DataError(f"{counted(long.height, 'item')} with a text over the API's {max_text:,} characters "
                            f"(RECSYS_MAX_TEXT_CHARS): {shown}{' …' if long.height > 5 else ''}; nothing was sent",
                            source=str(items))
        if batch_size > max_items:
            console.print(f"note: the API takes at most {max_items:,} items a request (RECSYS_MAX_BATCH_ITEMS): "
                          f"batches of {max_items:,}")
            batch_size = max_items
        records = records_of(frame, kept)
        batches = math.ceil(len(records) / batch_size)
        summary = f"{counted(len(records), 'item')} in {counted(batches, 'request')}" + (
            f" ({counted(skipped, 'bad row')} skipped)" if skipped else "")
        gone: list[str] = []
        if missing != "keep":
            active, inactive = served_ids(client)
            # an item whose row was bad is listed all the same: left as served, never taken for a missing one
            gone = missing_items(set(listed.to_list()), active, inactive, missing)
            served_now = len(active) + len(inactive)
            if gone and len(gone) > max_missing * served_now:
                raise DataError(f"--missing {missing} would change {counted(len(gone), 'item')} of the "
                                f"{served_now:,} the catalogue holds, in stock or not ({len(gone) / served_now:.0%}), "
                                "more than --max-missing "
                                f"({max_missing:.0%}): is the file whole? Nothing was sent", source=str(items))
            summary += f"; {counted(len(gone), 'served item')} not in the file to {missing}"
        if dry_run:
            console.print(f"dry run, nothing sent: would push {summary} → {url}")
            return
        started, answers = time.perf_counter(), []
        from tqdm.auto import tqdm

        with tqdm(total=len(records) + len(gone), desc="pushing items", unit="item", disable=None) as bar:
            for key, entries in (("upsert", records), (missing, gone)):
                for start in range(0, len(entries), batch_size):
                    batch = entries[start:start + batch_size]
                    answers += send(client, batch, start + 1, key)
                    bar.update(len(batch))
    seconds = time.perf_counter() - started
    changed, made = len(records) + len(gone), len(answers)
    split = (f" (batches over the API's body limit, RECSYS_MAX_BODY_BYTES, were split: {counted(made, 'request')} "
             "made)") if made != batches + math.ceil(len(gone) / batch_size) else ""
    unchanged = sum(answer.get("unchanged", 0) for answer in answers)
    same = (f"; {counted(unchanged, 'item')} already served as in the file (kept as they were, their vectors "
            "too)") if unchanged else ""
    console.print(f"[green]pushed[/] {summary}{split} in {seconds:.1f} s ({changed / max(seconds, 1e-9):,.0f} "
                  f"items/s) → {url}; the catalogue serves {counted(answers[-1]['index_items'], 'item')}{same}")
