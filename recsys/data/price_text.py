"""Prices as shops' exports write them ("12,50", "€19.99", "1.234,50 EUR", "1,299.00") read as numbers: currency
signs and codes and digit-group spaces dropped, a decimal comma read as a point. A price whose separator is
ambiguous ("1,234": a thousand and more, or a little over one?) is left as written, so it stays unparsable."""

from __future__ import annotations

import polars as pl

_NOISE = r"(?i)[€$£¥₹]|\b(?:EUR|USD|GBP|CHF|JPY|SEK|NOK|DKK|PLN|CZK|INR|CAD|AUD)\b|[\s\u00a0\u202f']"


def price_number_text(written: pl.Expr) -> pl.Expr:
    """`written` (strings) as the text of a number a cast reads; anything else is left as it was."""
    text = written.str.replace_all(_NOISE, "")
    dot, comma = text.str.contains(".", literal=True), text.str.contains(",", literal=True)
    commas, dots = text.str.count_matches(",", literal=True), text.str.count_matches(".", literal=True)
    return (pl.when(dot & comma & text.str.contains(r",\d*$"))  # 1.234,50: the comma is the decimal point
            .then(text.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True))
            .when(dot & comma)  # 1,234.50
            .then(text.str.replace_all(",", "", literal=True))
            .when(comma & (commas > 1) & text.str.contains(r"^-?\d{1,3}(,\d{3})+$"))  # 1,234,567
            .then(text.str.replace_all(",", "", literal=True))
            .when(comma & (commas == 1) & ~text.str.contains(r"^-?\d+,\d{3}$"))  # 12,50 (not 1,234)
            .then(text.str.replace(",", ".", literal=True))
            .when(dot & (dots > 1) & text.str.contains(r"^-?\d{1,3}(\.\d{3})+$"))  # 1.234.567
            .then(text.str.replace_all(".", "", literal=True))
            .otherwise(text))
