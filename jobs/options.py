"""Comma-separated option values (`--concurrency 1,8,32`, `--kinds flat,hnsw`, `--lambdas 100,200`): one parser for
every command, so each refuses a bad value the same way before any work: typer.BadParameter naming the option,
every bad or repeated item and what the option takes.

Imports typer alone, so any command module can use it (jobs.app imports jobs.bench, which uses it)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import typer

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class Item(Protocol[V_co]):
    """How one item of a comma-separated value reads: called with the item's text, its value, or a ValueError whose
    message says what is wrong with it ("'x' is not a whole number"); `allowed` says what the option takes."""

    @property
    def allowed(self) -> str: ...

    def __call__(self, text: str) -> V_co: ...


def comma_list(value: str, option: str, item: Item[V], repeats: bool = False) -> list[V]:
    """The items of `value`, each read by `item`, in the order given (blanks between commas skipped);
    typer.BadParameter naming `option`, every bad item and what `item` allows when one is bad, one repeats another
    (`--seeds 0,0` would fit twice, `--sizes 1000,1e3` too; allowed with `repeats`, for lists whose every entry is
    one more run, such as `--concurrency 32,32,32`) or none is given."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    values: list[V] = []
    texts: list[str] = []
    problems: list[str] = []
    for part in parts:
        try:
            read = item(part)
        except ValueError as error:
            problems.append(str(error))
            continue
        first = next((text for text, seen in zip(texts, values) if seen == read), None)
        if first is None or repeats:
            values.append(read)
            texts.append(part)
        else:
            problems.append(f"{part!r} repeats {first!r}" if part != first else f"{part!r} is repeated")
    problems = list(dict.fromkeys(problems))  # '0' given three times is said once
    if problems or not parts:
        raise typer.BadParameter(f"{', '.join(problems) or 'none given'}; {item.allowed} (got {value!r})",
                                 param_hint=option)
    return values


@dataclass(frozen=True)
class WholeNumber:
    """A whole number ≥ `minimum` ("1e6" and "1_000" read too); `noun` names them in the message ("catalogue sizes")
    and `note` follows the bound (" for recall@100")."""

    minimum: int = 1
    noun: str = "whole numbers"
    note: str = ""

    @property
    def allowed(self) -> str:
        return f"expected comma-separated {self.noun} ≥ {self.minimum}{self.note}"

    def __call__(self, text: str) -> int:
        number = _whole(text)
        if number is None:
            raise ValueError(f"{text!r} is not a whole number")
        if number < self.minimum:
            raise ValueError(f"{text!r} is not ≥ {self.minimum}")
        return number


def _whole(text: str) -> int | None:
    """`text` as a whole number ("12", "1_000", "1e6"), or None (for "1.5", "inf", "nan", "x")."""
    try:
        return int(text)  # exact, however many digits
    except ValueError:
        pass
    try:
        real = float(text)
    except ValueError:
        return None
    return int(real) if real.is_integer() else None


@dataclass(frozen=True)
class Number:
    """A finite number above `low` (at least `low` when `low_open` is False) and at most `high`."""

    low: float = 0.0
    high: float = math.inf
    low_open: bool = True

    @property
    def bounds(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    @property
    def allowed(self) -> str:
        return f"expected comma-separated {'finite ' if self.high == math.inf else ''}numbers {self.bounds}"

    def __call__(self, text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        if not (self.low < number if self.low_open else self.low <= number) or number > self.high:
            raise ValueError(f"{text!r} is not {self.bounds}")
        return number


@dataclass(frozen=True)
class OneOf:
    """One of the `known` names (case as given); `noun` names them in the message ("unknown preset 'x'")."""

    known: Collection[str]
    noun: str = ""

    @property
    def allowed(self) -> str:
        return f"choose from {', '.join(self.known)}"

    def __call__(self, text: str) -> str:
        if text not in self.known:
            raise ValueError(f"unknown {self.noun + ' ' if self.noun else ''}{text!r}")
        return text


@dataclass(frozen=True)
class OrNone(Generic[V]):
    """`item`, or the word none (any case) for None."""

    item: Item[V]

    @property
    def allowed(self) -> str:
        return f"{self.item.allowed}, or none"

    def __call__(self, text: str) -> V | None:
        return None if text.lower() == "none" else self.item(text)


def bad_option_value(exc: ValueError) -> typer.BadParameter:
    """The usage error for a bad option value an import raised: naming its option when the error says which
    (`recsys.data.option_names.OptionValueError`), not the Python keyword."""
    from recsys.data.option_names import OptionValueError

    return typer.BadParameter(str(exc), param_hint=exc.flag() if isinstance(exc, OptionValueError) else None)
