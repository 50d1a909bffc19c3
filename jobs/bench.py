"""`recsys bench …`: benchmark commands; each writes JSON + Markdown + PNG under --out."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks: JSON + Markdown table + PNG chart per run.", no_args_is_help=True)
