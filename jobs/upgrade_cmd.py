"""`recsys upgrade-bundle`: a bundle written before this release's files, given them without training again
(encoders/upgrade.py); registered on the app when jobs/cli.py imports this module."""

from __future__ import annotations

from jobs.app import BundleData, BundleDir, NewBundleOut, app, check_beside, writes_a_bundle
from jobs.output import console
from jobs.ranker_cmd import bundle_and_dataset, kept_manifest, load_bundle
from recsys.text_format import counted


@app.command("upgrade-bundle")
@writes_a_bundle
def upgrade_bundle(bundle: BundleDir, data: BundleData, out: NewBundleOut = None) -> None:
    """Give a bundle written by an earlier release what this one saves, as a new version: each trained item's own
    neighbour share, rebuilt from the dataset it was trained on and checked against the bundle's own vectors, so a
    trained item's new text keeps its neighbours (README "Live catalogue"). Nothing is written when nothing is
    missing."""
    from encoders.upgrade import add_own_neighbours
    from recsys.artifacts import new_version

    check_beside(bundle, out)
    path, manifest, dataset = bundle_and_dataset(bundle, data)
    through = ((manifest.get("train") or {}).get("refit") or {}).get("through", "train")
    recommender = load_bundle(path)
    done = add_own_neighbours(recommender, dataset, through)
    if not done.upgraded:
        why = "towers without neighbour features" if done.none and not done.already else "its own neighbour shares"
        console.print(f"nothing to upgrade: {path} has {why}; no bundle written")
        return
    record = {"parent_bundle": str(path), "own_neighbours": {
        "towers": done.upgraded, "items_with_neighbours": done.items_with_neighbours, "through": through,
        "checked_items": done.checked, "max_abs_diff": done.max_diff}}
    kept = kept_manifest(manifest)
    kept["upgrade"] = record
    target = out or path.parent / new_version()
    console.print(f"own neighbour shares of {counted(done.items_with_neighbours, 'item')} rebuilt from the events "
                  f"through the {through} step; {counted(done.checked, 'item')} re-encoded give the bundle's vectors "
                  f"back (max |diff| {done.max_diff:.1e})")
    console.print(f"[green]bundle written[/] → {recommender.save(target, kept)}")
