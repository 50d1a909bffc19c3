"""Every `recsys …` line in the code blocks of the README and of benchmarks/EXPERIMENTS.md names a command and options
that exist. Nothing is run: the CLI's own command tree is read (stop 55's walk-through of the README on a fresh clone
ran the commands; this keeps their names and options from drifting between such walk-throughs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from jobs.cli import app

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```[\w+-]*\n(.*?)```", re.S)  # every fenced block (a python one too: fences pair up)
COMMAND = re.compile(r"(?:^|[\s(=;&|])recsys\s")  # the command, not a path such as /mnt/recsys/…
ENDS = ("&&", "||", "|", ";", "&", ">", ">>", "2>", "2>&1")


def command_lines(text: str) -> list[str]:
    """The `recsys` command lines of the fenced code blocks of `text` (continued lines joined)."""
    lines = []
    for block in BLOCK.findall(text):
        lines += [line for line in re.sub(r"\\\n\s*", " ", block).splitlines() if COMMAND.search(line)]
    return lines


def check(line: str, root) -> list[str]:
    """What `line` names that the CLI does not have: a command, or an option of its command."""
    tokens = shlex.split(line, comments=True)
    tokens = tokens[tokens.index("recsys") + 1:]
    for end in ENDS:
        if end in tokens:
            tokens = tokens[:tokens.index(end)]
    command, path = root, "recsys"
    while tokens and hasattr(command, "list_commands") and not tokens[0].startswith("-"):
        name = tokens.pop(0)
        command, path = command.get_command(None, name), f"{path} {name}"
        if command is None:
            return [f"no command `{path}`"]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    if path == "recsys":
        options.add("--version")
    return [f"`{path}` has no option {t.split('=', 1)[0]}" for t in tokens
            if t.startswith("--") and t.split("=", 1)[0] not in options]


@pytest.mark.parametrize("document", ["README.md", "benchmarks/EXPERIMENTS.md"])
def test_every_documented_command_and_option_exists(document):
    root = typer.main.get_command(app)
    lines = command_lines((ROOT / document).read_text(encoding="utf-8"))
    assert len(lines) > 50  # the code blocks were found
    problems = [f"{line.strip()}: {problem}" for line in lines for problem in check(line, root)]
    assert problems == []


def test_the_check_catches_a_renamed_option_and_an_unknown_command():
    root = typer.main.get_command(app)
    text = "```bash\nrecsys build --data d --outdir x   # a comment --ignored\nrecsys bench nope --out o\n" \
           "RECSYS_X=1 recsys serve --bundle b --port 1 > log 2>&1\nls /mnt/recsys/x --all\n```\n"
    lines = command_lines(text)
    assert len(lines) == 3
    assert [check(line, root) for line in lines] == [["`recsys build` has no option --outdir"],
                                                     ["no command `recsys bench nope`"], []]
