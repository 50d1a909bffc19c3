"""Bundles: one directory per trained model, written atomically and verified by checksum on load."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath

from recsys.errors import BundleError

MANIFEST = "manifest.json"
BUNDLE_SCHEMA_VERSION = 1
JOB_OUTPUTS = {"recsys-batch-scores": ("recsys batch-score", "batch scores"),
               "recsys-item-vectors": ("recsys encode", "item vectors")}
"""The job outputs that hold a manifest.json and are not bundles (jobs/batch/): format → (command, contents)."""
TRACKED_LIBRARIES = ("torch", "transformers", "peft", "faiss-cpu", "faiss-gpu-cu12", "polars", "numpy",
                     "lightgbm", "bert-recsys")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(names: Sequence[str] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (missing packages are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The source tree's commit, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def write_bundle(target: str | Path, write_parts: Callable[[Path], None], manifest: dict,
                 overwrite: bool = False) -> Path:
    """Write parts into a temporary sibling directory, add manifest.json, then rename into place."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_parts(tmp)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        full = {
            "bundle_schema_version": BUNDLE_SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "git_sha": git_sha(),
            "libraries": library_versions(),
            **manifest,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, default=str))
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_bundle(path: str | Path) -> Path:
    """A bundle directory, or a model directory whose newest version (by name) is taken."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if path.is_dir():
        versions = sorted(p for p in path.iterdir()  # not a bundle being written (.NAME.tmp-…) or replaced
                          if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())
        if versions:
            return versions[-1]
    if not path.exists():
        raise BundleError(f"{path}: no bundle here (no such directory)")
    if not path.is_dir():
        raise BundleError(f"{path}: no bundle here (a file, not a bundle directory)")
    if (path / "schema.json").is_file():  # the commonest mix-up: --bundle given the dataset's directory
        raise BundleError(f"{path}: no bundle here: it holds a dataset; make a bundle from it with "
                          f"`recsys build --data {path}` or `recsys train --data {path}`")
    named = bundle_names(path)
    if named:  # `recsys build --out artifacts` writes artifacts/NAME/VERSION: --bundle artifacts is one level up
        raise BundleError(f"{path}: no bundle here: it holds the bundles of {listed(named)}; name one, e.g. "
                          f"{path / named[0]} (its newest version)")
    datasets = dataset_names(path)
    if datasets:
        raise BundleError(f"{path}: no bundle here: it holds the datasets {listed(datasets)}; make a bundle from one "
                          f"with `recsys build --data {path / datasets[0]}`")
    raise BundleError(f"{path}: no bundle here (no {MANIFEST}); build one with `recsys build`")


def bundle_names(path: Path) -> list[str]:
    """The model directories under `path` (`path/NAME/VERSION/manifest.json`): what `--out` of `recsys build` and
    `recsys train` holds."""
    def holds_versions(model: Path) -> bool:
        try:
            return any((v / MANIFEST).is_file() for v in model.iterdir() if v.is_dir())
        except OSError:  # a directory we may not list: not one of ours to name
            return False

    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and holds_versions(p))


def dataset_names(path: Path) -> list[str]:
    """The datasets directly under `path` (`path/NAME/schema.json`): a folder of `recsys import` outputs."""
    return sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "schema.json").is_file())


def listed(names: Sequence[str], most: int = 5) -> str:
    """Names for a message: the first `most`, then how many more."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def read_manifest(bundle: str | Path, verify: bool = True) -> dict:
    """Load manifest.json and, when `verify`, check every listed file's sha256 and that none is missing."""
    bundle = Path(bundle)
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"{bundle}: missing {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # e.g. a torn write, a damaged disk block
        raise BundleError(f"{bundle}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{bundle}: {MANIFEST} is not a JSON object (a {type(manifest).__name__})")
    if "bundle_schema_version" not in manifest:  # a job output's manifest, or another tool's
        raise BundleError(f"{bundle}: no bundle here: {not_a_bundle(manifest)}")
    if manifest.get("bundle_schema_version") != BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{bundle}: bundle schema version {manifest.get('bundle_schema_version')!r} "
                          f"is not supported (expected {BUNDLE_SCHEMA_VERSION})")
    if verify:
        files = manifest.get("files", {})
        if not isinstance(files, dict):
            raise BundleError(f"{bundle}: {MANIFEST} 'files' is not a mapping of file names to checksums")
        for name in files:  # every entry is checked before any file is opened
            if not _inside(bundle, name):
                raise BundleError(f"{bundle}: {MANIFEST} lists {str(name)[:200]!r}, which is not a relative path "
                                  "inside the bundle")
        for name, expected in files.items():
            file = bundle / name
            if not file.is_file():
                raise BundleError(f"{bundle}: file {name} listed in the manifest is missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{bundle}: checksum mismatch for {name} (corrupted or modified)")
    return manifest


def not_a_bundle(manifest: dict) -> str:
    """What a manifest.json without a bundle schema version belongs to, for "no bundle here: …"."""
    fmt = manifest.get("format")
    if fmt in JOB_OUTPUTS:
        command, contents = JOB_OUTPUTS[fmt]
        return f"it holds `{command}` output ({contents}), not a bundle"
    held = f"is of format {fmt!r}" if isinstance(fmt, str) else "names no bundle schema version"
    return f"its {MANIFEST} {held}, not a bundle's"


def _inside(bundle: Path, name: object) -> bool:
    """Whether a manifest entry names a file inside `bundle`: a relative POSIX path, no '..', no drive,
    no NUL or backslash, and no symbolic link leading out of the bundle."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return False
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or PureWindowsPath(name).drive:
        return False
    try:
        return (bundle / pure).resolve().is_relative_to(bundle.resolve())
    except (OSError, ValueError):
        return False
