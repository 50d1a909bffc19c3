"""The tree passes `ruff check` with the project's settings (pyproject.toml, [tool.ruff]): an unused import, an
undefined name or a line over 120 characters fails the suite, not only a reviewer's eye."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruff.__main__ import find_ruff_bin

ROOT = Path(__file__).resolve().parents[1]


def test_the_tree_passes_ruff():
    found = subprocess.run([find_ruff_bin(), "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                           capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 0, found.stdout + found.stderr
