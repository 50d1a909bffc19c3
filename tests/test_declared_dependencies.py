"""Every third-party module the installed packages import when loaded is a core dependency in pyproject.toml: a
fresh `pip install -e .` runs every `recsys` command. (httpx used to come with huggingface-hub; hub 2.5 brings
httpx2 instead, and on a fresh clone `recsys quickstart` failed on jobs/push_cmd.py's `import httpx`.)"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys", "encoders", "jobs", "api", "benchmarks")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalised(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def loaded_imports(path: Path) -> set[str]:
    """The top-level names a module imports as it loads (its own statements; imports inside functions or `try` are
    optional by design)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in PACKAGES
            and name != "__future__"}


def test_every_module_level_import_is_a_core_dependency():
    distributions = metadata.packages_distributions()
    wanted = declared()
    missing = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in loaded_imports(path):
                dists = {normalised(d) for d in distributions.get(name, [name])}
                if not dists & wanted:
                    missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported at module level but not in [project] dependencies: {missing}"
