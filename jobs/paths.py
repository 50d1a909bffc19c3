"""Output locations checked before any work: an `--out` that cannot be written (a parent that is a file, a directory
that is not writable, a file system that takes no new entries such as /proc) is refused when the command line is
read, not after loading BERT, encoding or an epoch.

Imports typer alone, so any command module can use it (jobs.app imports jobs.bench, which uses it)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import typer


def nearest_existing(path: Path) -> Path:
    """`path` itself when it exists, else its nearest ancestor that does (the current directory at worst)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _takes_new_entries(directory: Path) -> str | None:
    """None when a directory can be created in `directory` (tried, then removed at once: root passes `os.access` on
    /proc and the like, where nothing can be created); else the file system's reason."""
    probe = directory / f".recsys-write-check-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as error:
        return error.strerror or str(error)
    probe.rmdir()
    return None


def unwritable_reason(path: Path) -> str | None:
    """Why `path` (an output file or directory, existing or not) cannot be written, in words; None when it can.
    Creates nothing that stays: the check is a directory made and removed where the command itself writes."""
    found = nearest_existing(path)
    if found != path and not found.is_dir():
        return f"its parent {found} is a file, not a directory"
    if found == path and not path.is_dir():  # an existing output file, written again through its directory
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
        found = path.parent if str(path.parent) else Path(".")
    if not os.access(found, os.W_OK | os.X_OK):
        return f"{found} is not writable"
    reason = _takes_new_entries(found)
    return None if reason is None else f"nothing can be created in {found} ({reason})"


def writable(option: str):
    """A callback for the output location `option` (e.g. "--run-dir"): typer.BadParameter naming it, before any work,
    when the location cannot be written (None passes)."""
    def check(value: Path | None) -> Path | None:
        if value is not None:
            reason = unwritable_reason(Path(value))
            if reason is not None:
                raise typer.BadParameter(f"{value} cannot be written: {reason}", param_hint=option)
        return value
    return check


writable_out = writable("--out")
"""`--out` callback: typer.BadParameter, before any work, when the location cannot be written (None passes)."""
