"""Exceptions with messages meant for the person running the job."""

from __future__ import annotations

from recsys.text_format import plural


class RecsysError(Exception):
    """Base class for errors the CLI and API turn into clear messages."""


class DataError(RecsysError):
    """Bad input data: names the file, the row (1-based, header excluded) and the problem."""

    def __init__(self, problem: str, *, source: str | None = None, row: int | None = None) -> None:
        self.problem = problem
        self.source = source
        self.row = row
        where = ""
        if source is not None:
            where = f"{source}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(f"{where}{problem}")


class BundleError(RecsysError):
    """A model bundle is missing, incomplete, corrupted or of an incompatible version."""


class SettingError(RecsysError, ValueError):
    """Settings that cannot work on this data (an index kind for too few items, a PQ split that does not divide
    the vectors' dimension)."""


class StoreError(RecsysError):
    """The event store cannot be opened or reached."""


class UnknownIdError(RecsysError, KeyError):
    """An item or user id is not in the catalogue / event store."""

    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind = kind
        self.ids = ids
        shown = ", ".join(repr(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        super().__init__(f"unknown {kind} {plural(len(ids), 'id')}: {shown}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]
