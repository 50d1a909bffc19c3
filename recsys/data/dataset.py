"""The canonical dataset: an item table and an interaction log, saved as Parquet + schema.json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.errors import DataError
from recsys.text_format import named

SCHEMA_VERSION = 1

ITEM_SCHEMA: dict[str, pl.DataType] = {"item_id": pl.Utf8(), "text": pl.Utf8()}
OPTIONAL_ITEM_SCHEMA: dict[str, pl.DataType] = {
    "title": pl.Utf8(),
    "category": pl.Utf8(),
    "brand": pl.Utf8(),
    "price": pl.Float64(),
}
INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8(),
    "item_id": pl.Utf8(),
    "timestamp": pl.Int64(),
}
KIND_COLUMN = "kind"
"""The optional interactions column of each event's kind as the import read it (`import table --kind-col`: stripped
and lower-cased, null for none): "purchase" reads "because you bought …" as a live purchase event does."""
SPLIT_VALUES = ("train", "valid", "test")
REJECTED_FILE = "rejected.csv"
REJECTED_SCHEMA = {"file": pl.Utf8, "row": pl.Int64, "problem": pl.Utf8, "value": pl.Utf8}


@dataclass
class ImportReport:
    """What an importer read and anything it did not keep, with counts (never silent). `rejected` holds the bad
    rows an import skipped (file, row, problem, value); `Dataset.save` writes them to rejected.csv."""

    rows_read: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rejected: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECTED_SCHEMA))

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def rejected_counts(self) -> dict[str, int]:
        """Skipped bad rows per problem and file ("unknown item id (not in items.csv) (events.csv)": 3)."""
        counts = self.rejected.group_by("file", "problem", maintain_order=True).len()
        return {f"{problem} ({file})": n for file, problem, n in counts.iter_rows()}

    def to_dict(self) -> dict:
        out = {"rows_read": self.rows_read, "dropped": self.dropped, "notes": self.notes}
        if self.rejected.height:
            out |= {"rejected": self.rejected_counts(), "rejected_rows": self.rejected.height,
                    "rejected_file": REJECTED_FILE}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ImportReport":
        return cls(dict(data.get("rows_read", {})), dict(data.get("dropped", {})), list(data.get("notes", [])))


@dataclass(frozen=True)
class Dataset:
    """Items (`item_id`, `text`, optional title/category/brand/price) and interactions
    (`user_id`, `item_id`, `timestamp`, optional `split` in train/valid/test, optional `kind`: `KIND_COLUMN`).
    `text_template` is the item-text template `text` was rendered with at import (None: the source's own text);
    bundles carry it on, so live upserts and free-text queries are rendered the same way
    (`recsys.data.templates`)."""

    name: str
    items: pl.DataFrame
    interactions: pl.DataFrame
    report: ImportReport = field(default_factory=ImportReport)
    text_template: str | None = None

    def __post_init__(self) -> None:
        validate(self.items, self.interactions, source=self.name)

    @property
    def has_split(self) -> bool:
        return "split" in self.interactions.columns

    @property
    def n_users(self) -> int:
        return self.interactions["user_id"].n_unique()

    def fingerprint(self) -> str:
        """sha256 over the canonical content, stable across save/load."""
        digest = Fingerprint(self.items)
        digest.add(self.interactions)
        return digest.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "n_items": self.items.height,
            "n_users": self.n_users,
            "n_interactions": self.interactions.height,
            "has_split": self.has_split,
        }

    def save(self, directory: str | Path) -> Path:
        """Write items.parquet, interactions.parquet, schema.json and (when the import skipped bad rows)
        rejected.csv into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.items.write_parquet(directory / "items.parquet")
        self.interactions.write_parquet(directory / "interactions.parquet")
        (directory / REJECTED_FILE).unlink(missing_ok=True)
        if self.report.rejected.height:
            self.report.rejected.write_csv(directory / REJECTED_FILE)
        write_schema(directory, self.summary(), self.items.schema, self.interactions.schema, self.fingerprint(),
                     self.report, self.text_template)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Dataset":
        """Read a dataset written by `save`; clear error when it is not one."""
        directory = Path(directory)
        schema_path = directory / "schema.json"
        if not schema_path.is_file():
            raise DataError("not a dataset directory (no schema.json); create one with `recsys import`",
                            source=str(directory))
        schema = _read_schema(schema_path)
        if schema.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"unsupported dataset schema version {schema.get('schema_version')!r}",
                            source=str(schema_path))
        items = _read_table(directory / "items.parquet")
        interactions = _read_table(directory / "interactions.parquet")
        return cls(schema["name"], items, interactions, ImportReport.from_dict(schema.get("import_report", {})),
                   schema.get("text_template"))


def _read_schema(path: Path) -> dict:
    """A dataset's schema.json; DataError naming the file when it cannot be read or is not a JSON object."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the dataset schema ({type(exc).__name__}: {exc})", source=str(path)) from None
    if not isinstance(schema, dict):
        raise DataError("not a dataset schema (expected a JSON object)", source=str(path))
    return schema


def _read_table(path: Path) -> pl.DataFrame:
    """One of a dataset's Parquet tables; DataError naming the file when it is missing or damaged."""
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read this dataset table ({type(exc).__name__}: {exc})", source=str(path)) from None


class Fingerprint:
    """`Dataset.fingerprint`, fed the interactions in consecutive chunks (the same digest as one frame), so a
    dataset streamed to disk chunk by chunk gets the fingerprint its loaded form will have."""

    def __init__(self, items: pl.DataFrame) -> None:
        self._digest = hashlib.sha256()
        self._digest.update(",".join(items.columns).encode())
        self._digest.update(items.hash_rows(seed=0).to_numpy().tobytes())
        self._started = False

    def add(self, interactions: pl.DataFrame) -> None:
        if not self._started:
            self._digest.update(",".join(interactions.columns).encode())
            self._started = True
        self._digest.update(interactions.hash_rows(seed=0).to_numpy().tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def write_schema(directory: Path, summary: dict, item_schema: Mapping, interaction_schema: Mapping, fingerprint: str,
                 report: ImportReport, text_template: str | None = None) -> None:
    """schema.json: the version, `summary` (name and counts), the column types, the fingerprint and the report."""
    schema = {
        "schema_version": SCHEMA_VERSION,
        **summary,
        "item_columns": {c: str(t) for c, t in item_schema.items()},
        "interaction_columns": {c: str(t) for c, t in interaction_schema.items()},
        "fingerprint": fingerprint,
        "import_report": report.to_dict(),
        "text_template": text_template,
    }
    (Path(directory) / "schema.json").write_text(json.dumps(schema, indent=2))


def _check_columns(frame: pl.DataFrame, required: dict[str, pl.DataType], source: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"missing {named('column', missing)}; found {frame.columns}", source=source)
    for column, dtype in required.items():
        if frame.schema[column] != dtype:
            raise DataError(f"column {column!r} has type {frame.schema[column]}, expected {dtype}", source=source)


def _first_row(mask: pl.Series) -> int:
    """1-based index of the first True in `mask`."""
    return int(mask.arg_true()[0]) + 1


def validate(items: pl.DataFrame, interactions: pl.DataFrame, source: str = "dataset") -> None:
    """Raise DataError naming the first offending row for any violation of the canonical schema."""
    _check_columns(items, ITEM_SCHEMA, f"{source} items")
    _check_columns(interactions, INTERACTION_SCHEMA, f"{source} interactions")
    for column, dtype in OPTIONAL_ITEM_SCHEMA.items():
        if column in items.columns and items.schema[column] != dtype:
            raise DataError(f"column {column!r} has type {items.schema[column]}, expected {dtype}",
                            source=f"{source} items")
    if items.height == 0:
        raise DataError("the item table is empty", source=f"{source} items")
    null_ids = items["item_id"].is_null()
    if null_ids.any():
        raise DataError("missing item_id", source=f"{source} items", row=_first_row(null_ids))
    dup = items["item_id"].is_duplicated()
    if dup.any():
        row = _first_row(dup)
        raise DataError(f"duplicate item_id {items['item_id'][row - 1]!r}", source=f"{source} items", row=row)
    empty_text = items["text"].is_null() | (items["text"].str.strip_chars() == "")
    if empty_text.any():
        row = _first_row(empty_text)
        raise DataError(f"empty text for item {items['item_id'][row - 1]!r}", source=f"{source} items", row=row)
    if interactions.height == 0:
        raise DataError("no interactions: a dataset needs at least one (user, item, timestamp) row",
                        source=f"{source} interactions")
    for column in INTERACTION_SCHEMA:
        nulls = interactions[column].is_null()
        if nulls.any():
            raise DataError(f"missing {column}", source=f"{source} interactions", row=_first_row(nulls))
    unknown = ~interactions["item_id"].is_in(items["item_id"].implode())
    if unknown.any():
        row = _first_row(unknown)
        raise DataError(f"unknown item id {interactions['item_id'][row - 1]!r} (not in the item table)",
                        source=f"{source} interactions", row=row)
    if KIND_COLUMN in interactions.columns and interactions.schema[KIND_COLUMN] != pl.Utf8:
        raise DataError(f"column {KIND_COLUMN!r} has type {interactions.schema[KIND_COLUMN]}, expected String",
                        source=f"{source} interactions")
    if "split" in interactions.columns:
        bad = ~interactions["split"].is_in(list(SPLIT_VALUES))
        if bad.any():
            row = _first_row(bad)
            raise DataError(f"split must be one of {SPLIT_VALUES}, got {interactions['split'][row - 1]!r}",
                            source=f"{source} interactions", row=row)
