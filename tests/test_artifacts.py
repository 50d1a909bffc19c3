import json

import pytest

from recsys.artifacts import read_manifest, resolve_bundle, write_bundle
from recsys.errors import BundleError


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def broken(directory):
        (directory / "half.txt").write_text("x")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "m" / "v1", broken, {})
    assert list((tmp_path / "m").iterdir()) == []


def test_manifest_lists_checksums_and_resolves_newest(tmp_path):
    write_bundle(tmp_path / "m" / "v1", lambda d: (d / "a.txt").write_text("one"), {"name": "m"})
    write_bundle(tmp_path / "m" / "v2", lambda d: (d / "a.txt").write_text("two"), {"name": "m"})
    assert resolve_bundle(tmp_path / "m").name == "v2"
    manifest = read_manifest(tmp_path / "m" / "v2")
    assert manifest["name"] == "m" and set(manifest["files"]) == {"a.txt"}
    assert len(manifest["files"]["a.txt"]) == 64
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path / "m" / "v2", lambda d: None, {})


def test_incompatible_schema_version_refused(tmp_path):
    path = write_bundle(tmp_path / "v", lambda d: None, {})
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["bundle_schema_version"] = 999
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version"):
        read_manifest(path)
    with pytest.raises(BundleError, match="no bundle here"):
        resolve_bundle(tmp_path / "nothing")


def test_a_folder_of_bundles_or_datasets_names_what_it_holds(tmp_path):
    """`--bundle artifacts` (the --out of `recsys build`, one level above the bundles) and `--bundle data` (a folder
    of datasets) said only "no bundle here (no manifest.json); build one with `recsys build`"."""
    for name in ("shop", "shop-zero-shot"):
        write_bundle(tmp_path / "artifacts" / name / "v1", lambda d: None, {"name": name})
    with pytest.raises(BundleError) as raised:
        resolve_bundle(tmp_path / "artifacts")
    assert str(raised.value) == (f"{tmp_path / 'artifacts'}: no bundle here: it holds the bundles of shop, "
                                 f"shop-zero-shot; name one, e.g. {tmp_path / 'artifacts' / 'shop'} "
                                 "(its newest version)")
    for name in "abcdefg":
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "schema.json").write_text("{}")
    with pytest.raises(BundleError, match="it holds the datasets a, b, c, d, e and 2 more; make a bundle from one "
                                          "with `recsys build --data "):
        resolve_bundle(tmp_path / "data")


@pytest.mark.parametrize(("manifest", "message"), [
    ({"format": "recsys-batch-scores"}, "no bundle here: it holds `recsys batch-score` output (batch scores), "
                                        "not a bundle"),
    ({"format": "recsys-item-vectors"}, "no bundle here: it holds `recsys encode` output (item vectors), not a bundle"),
    ({"format": "other-tool"}, "no bundle here: its manifest.json is of format 'other-tool', not a bundle's"),
    ({"name": "x"}, "no bundle here: its manifest.json names no bundle schema version, not a bundle's"),
])
def test_a_manifest_that_is_not_a_bundles_says_what_it_is(tmp_path, manifest, message):
    """A directory whose manifest.json is a job output's or another tool's (was: "bundle schema version None is not
    supported")."""
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as raised:
        read_manifest(resolve_bundle(tmp_path))
    assert str(raised.value) == f"{tmp_path}: {message}"


@pytest.mark.parametrize(("content", "message"), [(b"\xff\xfe\x00\x13garbage", "is not valid JSON"),
                                                  (b"[1, 2]", "is not a JSON object \\(a list\\)")])
def test_damaged_manifest_is_a_bundle_error(tmp_path, content, message):
    """Bytes that are not UTF-8 or JSON that is not an object (was: a UnicodeDecodeError / AttributeError
    traceback from `recsys recommend`, `serve`, `batch-score`)."""
    path = write_bundle(tmp_path / "v", lambda d: None, {})
    (path / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError, match=f"manifest.json {message}"):
        read_manifest(path)


@pytest.mark.parametrize("entry", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "C:/x.txt", "a\\..\\b",
                                   "link/secret.txt", "", "nul\x00.txt"])
def test_manifest_entries_outside_the_bundle_are_refused_before_any_file_is_read(tmp_path, entry, monkeypatch):
    import recsys.artifacts

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    path = write_bundle(tmp_path / "m" / "v1", lambda d: (d / "a.txt").write_text("one"), {})
    (path / "link").symlink_to(tmp_path / "outside")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][entry] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    read = []
    monkeypatch.setattr(recsys.artifacts, "sha256_file", lambda file: read.append(file))
    with pytest.raises(BundleError, match="not a relative path inside the bundle"):
        read_manifest(path)
    assert read == []


def test_a_model_directory_never_resolves_to_a_bundle_still_being_written(tmp_path):
    """`write_bundle` writes `.VERSION.tmp-…/` (manifest included) and renames it into place: while the first
    version of a model is being written, --bundle MODEL took the temporary directory, renamed away under it."""
    model = tmp_path / "shop"
    (model / ".v1.tmp-0a1b2c3d").mkdir(parents=True)
    (model / ".v1.tmp-0a1b2c3d" / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="no bundle here"):
        resolve_bundle(model)
    written = write_bundle(model / "v1", lambda d: None, {})
    assert resolve_bundle(model) == written
