"""Which bundle a server (or a worker restarted on its own) serves at start: the one it was started with
(`--bundle`, RECSYS_BUNDLE, `create_app`'s argument), or the one the latest reload recorded in the event store
swapped in. A reload is the operator's latest word: a rollback to an older version is not undone by a restart, and
a worker restarted on its own serves what the other workers serve. A version newer than the reloaded one, of the
same model directory, is a deployment made by restarting (a version trained since), and is served, unless the
reload was a rollback. `RECSYS_START_BUNDLE=given` always serves the bundle started with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys.artifacts import MANIFEST, resolve_bundle
from recsys.errors import BundleError

StartBundle = Literal["latest", "given"]


@dataclass(frozen=True)
class StartChoice:
    """The bundle to serve, and what start-up says about it (None: nothing; a warning otherwise)."""

    path: Path
    warning: str | None = None


def is_rollback(bundle: Path) -> bool:
    """Whether `bundle` is older than the newest version of its model directory (its parent): a reload to it is a
    rollback. False when that cannot be told (no sibling versions, an unreadable directory)."""
    try:
        return resolve_bundle(bundle.parent).resolve() != bundle.resolve()
    except (BundleError, OSError, ValueError):  # no model directory to compare with (ValueError: a NUL in a name)
        return False


def choose(given: Path, latest: dict | None, root: Path | None, mode: StartBundle = "latest") -> StartChoice:
    """The bundle to serve at start. `given`: the bundle started with (a bundle directory, resolved); `latest`: the
    record of the latest reload in the event store (`EventStore.latest_bundle`: {"path", "rollback"}); `root`: the
    directory reloads are confined to (RECSYS_BUNDLE_ROOT, else `given`'s model directory): a recorded bundle outside
    it is not followed."""
    if latest is None or not latest.get("path"):
        return StartChoice(given)
    reloaded, given = Path(latest["path"]).resolve(), given.resolve()
    if reloaded == given:
        return StartChoice(given)
    root = (root or given.parent).resolve()
    rollback = bool(latest.get("rollback"))
    kept = (f"the latest reload recorded in the event store swapped in {reloaded}; this server serves {given}, the "
            "bundle it was started with")
    if mode == "given":
        return StartChoice(given, f"{kept} (RECSYS_START_BUNDLE=given)")
    if not reloaded.is_relative_to(root):
        return StartChoice(given, f"{kept}: that bundle is outside the bundle root {root} (RECSYS_BUNDLE_ROOT)")
    if not (reloaded / MANIFEST).is_file():
        return StartChoice(given, f"{kept}: that bundle is gone")
    if not rollback and reloaded.parent == given.parent and given.name > reloaded.name:
        # a newer version than the reloaded one: deployed by this restart (a reload recorded before the record said
        # whether it was a rollback may have been one: said, as it was then)
        return StartChoice(given, None if "rollback" in latest else
                           f"{kept}: POST /v1/admin/reload with that bundle to serve it again")
    what = "a rollback" if rollback else "the reload"
    return StartChoice(reloaded, f"serving {reloaded}, which the latest reload recorded in the event store swapped "
                                 f"in ({what}), not {given}, the bundle this server was started with: to serve that "
                                 "one, POST /v1/admin/reload with it, or start with RECSYS_START_BUNDLE=given")


__all__ = ["StartBundle", "StartChoice", "choose", "is_rollback"]
