"""`recsys diversify`: a new bundle version whose lists use another diversification setting (MMR weight,
near-duplicate collapsing, depth): what `recsys bench diversify` measures, applied to the bundle a shop serves.

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jobs.app import BundleDir, NewBundleOut, app, check_beside, writes_a_bundle
from jobs.options import Number, OrNone
from jobs.output import console


def _threshold(text: str) -> float | None:
    """--duplicate-threshold: a cosine in (0, 1], or 'none' (off)."""
    read = OrNone(Number(0.0, 1.0))
    try:
        return read(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected a cosine in (0, 1], or none",
                                 param_hint="--duplicate-threshold") from None


@app.command("diversify")
@writes_a_bundle
def diversify(
    bundle: BundleDir,
    weight: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="MMR weight: 0 keeps the ranked order (default: the bundle's)")] = None,
    duplicate_threshold: Annotated[Optional[str], typer.Option(
        help="near-duplicate cosine in (0, 1]: items this close to one already in the list go behind the rest; "
             "'none' turns collapsing off (default: the bundle's)")] = None,
    depth: Annotated[Optional[int], typer.Option(
        min=10, max=1000, help="ranked items each list is picked from (default: the bundle's)")] = None,
    out: NewBundleOut = None,
) -> None:
    """Write a new bundle version whose lists use this diversification (the rest of the bundle unchanged)."""
    from jobs.ranker_cmd import kept_manifest, load_bundle
    from recsys.artifacts import new_version, read_manifest, resolve_bundle
    from recsys.config import DiversifyConfig

    threshold = None if duplicate_threshold is None else _threshold(duplicate_threshold)
    if weight is None and duplicate_threshold is None and depth is None:
        raise typer.BadParameter("give the setting to change: --weight, --duplicate-threshold or --depth",
                                 param_hint="--weight")
    check_beside(bundle, out)
    path = resolve_bundle(bundle)
    manifest = read_manifest(path)
    recommender = load_bundle(path)
    before = recommender.config.diversify
    changes = {key: value for key, value, given in (("weight", weight, weight is not None),
                                                    ("duplicate_threshold", threshold, duplicate_threshold is not None),
                                                    ("depth", depth, depth is not None)) if given}
    after = DiversifyConfig(**{**before.model_dump(), **changes})
    recommender.config = recommender.config.model_copy(update={"diversify": after})
    kept = kept_manifest(manifest)
    # the parent's figures were measured with its own lists: each row names the bundle it measured
    kept["metrics"] = [{"measured_on_bundle": str(path), **row} if isinstance(row, dict) else row
                       for row in kept.get("metrics") or []]
    kept["diversify"] = {"parent_bundle": str(path), "before": before.model_dump(mode="json"),
                         "after": after.model_dump(mode="json")}
    target = out or path.parent / new_version()
    console.print(f"diversification {_shown(before)} → {_shown(after)}")
    console.print(f"[green]bundle written[/] → {recommender.save(target, kept)}")


def _shown(config) -> str:
    threshold = "off" if config.duplicate_threshold is None else f"{config.duplicate_threshold:g}"
    return f"(MMR weight {config.weight:g}, near-duplicates {threshold}, depth {config.depth})"
