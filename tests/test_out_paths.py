"""--out locations that cannot be written are refused when the command line is read, before any slow work (was:
`build` after loading BERT and encoding, `train` after an epoch, `evaluate` after encoding, with a bare "File
exists", `bench lexical` after minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.paths import unwritable_reason, writable_out

NO_DATA = "/no/such/dataset"  # the command would fail on it at once: the --out check must come first


def commands(out: Path) -> dict[str, list[str]]:
    """The commands of the walk-through, each with `out` as its --out (a results file for evaluate)."""
    return {
        "build": ["build", "--data", NO_DATA, "--out", str(out)],
        "train": ["train", "--data", NO_DATA, "--out", str(out)],
        "evaluate": ["evaluate", "--data", NO_DATA, "--out", str(out / "e.json")],
        "bench lexical": ["bench", "lexical", "--bundle", "/no/such/bundle", "--data", NO_DATA, "--out", str(out)],
        "encode": ["encode", "--data", NO_DATA, "--out", str(out)],
        "batch-score": ["batch-score", "--bundle", "/no/such/bundle", "--out", str(out)],
        "refit": ["refit", "--bundle", "/no/such/bundle", "--data", NO_DATA, "--out", str(out)],
    }


def invoke(args: list[str]) -> tuple[int, str]:
    """(exit code, output on one line) of a command run in a wide terminal (the message is not wrapped)."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("command", list(commands(Path("x"))))
def test_an_out_below_a_file_is_refused_before_any_work(command, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    out = tmp_path / "results.json" / "sub"
    code, output = invoke(commands(out)[command])
    target = out / "e.json" if command == "evaluate" else out
    assert code == 2, output
    assert f"Invalid value for --out: {target} cannot be written: its parent {tmp_path / 'results.json'} is a file, " \
           "not a directory" in output
    assert (tmp_path / "results.json").read_text() == "{}" and "Traceback" not in output


@pytest.mark.parametrize("command", list(commands(Path("x"))))
def test_an_out_in_a_read_only_directory_is_refused_before_any_work(command, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o555 directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, output = invoke(commands(locked / "new")[command])
    finally:
        locked.chmod(0o755)
    assert code == 2, output
    assert f"cannot be written: {locked} is not writable" in output and list(locked.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_out_where_nothing_can_be_created_is_refused_for_root_too():
    """/proc passes os.access(W_OK) for root: the check tries to create a directory there."""
    code, output = invoke(commands(Path("/proc/x"))["bench lexical"])
    reason = "nothing can be created in /proc (No such file or directory)" if os.geteuid() == 0 \
        else "/proc is not writable"
    assert code == 2 and f"Invalid value for --out: /proc/x cannot be written: {reason}" in output, output


def test_a_writable_out_passes_and_the_check_leaves_nothing_behind(tmp_path):
    assert writable_out(tmp_path / "a" / "b") == tmp_path / "a" / "b" and writable_out(None) is None
    assert unwritable_reason(tmp_path) is None and list(tmp_path.iterdir()) == []  # no probe left, nothing made
    (tmp_path / "old.json").write_text("{}")
    assert unwritable_reason(tmp_path / "old.json") is None  # an existing results file is written again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_a_directory_the_user_cannot_write_is_named(tmp_path, monkeypatch):
    """What os.access says of a read-only directory for a user that is not root (the CLI case above skips as root)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("jobs.paths.os.access", lambda path, mode: Path(path) != locked)
    assert unwritable_reason(locked / "new" / "deeper") == f"{locked} is not writable"
    assert unwritable_reason(locked) == f"{locked} is not writable"
    assert list(locked.iterdir()) == []  # refused before the probe: nothing made


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_train_run_dir_that_cannot_be_written_is_refused_before_any_work(engine, tmp_path):
    """`train --run-dir` was checked only when the first checkpoint was written: after caching BERT's lower layers
    and a whole epoch (a walk-through's read-only mount: "error: …/run: Read-only file system" after 1.5 min on a
    300-item shop, after caching 14 min and an epoch on a 20,000-item one)."""
    (tmp_path / "notes.txt").write_text("keep")
    run_dir = tmp_path / "notes.txt" / "run"
    code, output = invoke(["train", "--data", NO_DATA, "--out", str(tmp_path / "art"), "--run-dir", str(run_dir),
                           "--engine", engine])
    assert code == 2, output
    assert f"Invalid value for --run-dir: {run_dir} cannot be written: its parent {tmp_path / 'notes.txt'} is a " \
           "file, not a directory" in output
    assert (tmp_path / "notes.txt").read_text() == "keep" and not (tmp_path / "art").exists()
