"""The `recsys` Typer app, owned here: command modules register on it (`@app.command`), and `jobs.cli` imports
every command module once, so nothing imports `jobs.cli` back."""

from __future__ import annotations

import functools

import typer

from jobs.bench import bench_app
from jobs.output import err_console
from recsys.errors import RecsysError

app = typer.Typer(help="BERT-based recommendation engine.", no_args_is_help=True, pretty_exceptions_enable=False)
import_app = typer.Typer(help="Import data into the canonical dataset format.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")


def friendly_errors(func):
    """Turn the project's own errors into one clear line and exit code 2 (never a traceback)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
    return wrapper
