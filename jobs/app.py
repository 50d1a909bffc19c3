"""The `recsys` Typer app, owned here with what its command modules share (error handling, option types, the
API's k limit): command modules register on it (`@app.command`), and `jobs.cli` imports every command module
once, so nothing imports `jobs.cli` back."""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
import typer.core
from pydantic import ValidationError
from rich.markup import escape

from api.settings import Settings
from jobs.bench import bench_app
from jobs.options import OneOf
from jobs.output import err_console
from jobs.paths import unwritable_reason, writable_out
from recsys.errors import RecsysError

class RecsysGroup(typer.core.TyperGroup):
    """The root command group: a bad option value of a choice (`--on-bad-rows skipp`) reads as the other usage
    errors, without the "Value error, " pydantic puts before typer's message for a Literal option."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:
            error.message = error.message.removeprefix("Value error, ")
            raise


app = typer.Typer(help="BERT-based recommendation engine.", no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=RecsysGroup)
import_app = typer.Typer(help="Import data into the canonical dataset format.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            typer.echo(f"bert-recsys {version('bert-recsys')}")
        except PackageNotFoundError:
            typer.echo("bert-recsys (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """BERT-based recommendation engine."""
    calm_bars_off_terminal()


LOG_BAR_SECONDS = 30
"""A progress bar's least interval between redraws when stderr is not a terminal (a log file, a pipe)."""


def calm_bars_off_terminal() -> None:
    """When stderr is not a terminal, progress bars redraw at most every `LOG_BAR_SECONDS` (tqdm's default
    `mininterval`, through its TQDM_MININTERVAL variable, so worker processes inherit it) instead of ten times a
    second: a log gets a line of progress per half minute, not thousands per hour. A variable already set wins."""
    import os
    import sys

    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_BAR_SECONDS))


def friendly_errors(func):
    """Turn the project's own errors (invalid settings, refused file-system calls) into one clear line and exit
    code 2 (never a traceback); the message is printed as it is (no Rich markup, so `[distributed]` stays)."""
    if getattr(func, "friendly_errors", False):
        return func

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except ValidationError as exc:
            err_console.print(f"[bold red]error:[/] invalid setting: {escape(validation_problems(exc))}")
            raise typer.Exit(2) from None
        except OSError as exc:  # the file system refused: an output path that is a file, no permission, disk full
            err_console.print(f"[bold red]error:[/] {escape(os_error_line(exc))}")
            raise typer.Exit(2) from None
        except Exception as exc:
            if not is_redis_outage(exc):
                raise
            err_console.print(f"[bold red]error:[/] the Redis event store stopped answering ({type(exc).__name__}: "
                              f"{escape(str(exc))}); --redis-timeout-s (RECSYS_REDIS_TIMEOUT_S) bounds each wait")
            raise typer.Exit(2) from None
    wrapper.friendly_errors = True  # type: ignore[attr-defined]
    return wrapper


def writes_a_bundle(func):
    """For a command that writes one bundle (atomically: a temporary directory renamed into place, removed when
    the job stops): Ctrl-C says that no bundle was written and exits 130. (Typer ends an interrupted command with
    exit code 130 and no word, so a user could not tell whether a half-written bundle was left.)"""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: no bundle written (a bundle is written whole or not at all); "
                              "rerun the same command to start again")
            raise typer.Exit(130) from None
    return wrapper


def is_redis_outage(exc: BaseException) -> bool:
    """Whether `exc` is redis' connection or timeout error: Redis gone or not answering in time during a job that
    reads the event store (redis is imported only by the jobs that opened a Redis store)."""
    errors = sys.modules.get("redis.exceptions")
    return errors is not None and isinstance(exc, (errors.ConnectionError, errors.TimeoutError))


def validation_problems(exc: ValidationError) -> str:
    """Pydantic's errors as one line, each `field.path: message`; a check of the whole config (no field) is its
    message alone, without pydantic's "Value error, " prefix."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def os_error_line(exc: OSError) -> str:
    """One line for a refused file-system call: what failed and on which path(s)."""
    if exc.strerror is None:
        return str(exc)
    paths = " → ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{paths}: {exc.strerror}" if paths else exc.strerror


def finish_commands(*apps: typer.Typer) -> None:
    """For every command registered on `apps` so far: the `friendly_errors` handling (applied here only, not by
    the command modules), so no command shows a traceback for the project's own errors, and its docstring's first
    paragraph as one line in the `--help` command list (wrapped by the terminal, not where the source broke it).
    `jobs.cli` calls it after importing the command modules."""
    for typer_app in apps:
        for command in typer_app.registered_commands:
            if command.callback is None:
                continue
            command.callback = friendly_errors(command.callback)
            if command.short_help is None and command.callback.__doc__:
                first = inspect.cleandoc(command.callback.__doc__).split("\n\n")[0]
                command.short_help = " ".join(first.split())


HELP_PANELS = {
    "Start here": ("quickstart", "import"),
    "Build and train a bundle": ("build", "train", "train-ranker", "encode", "refresh-stats", "refit", "diversify",
                                 "upgrade-bundle"),
    "Use a bundle": ("recommend", "serve", "push-items", "batch-score", "evaluate", "export"),
    "Measure": ("bench",),
}
"""`recsys --help` groups its commands in these panels, in this order (`arrange_help`)."""


def command_name(command) -> str:
    """The name a Typer command or group is invoked by."""
    return command.name or command.callback.__name__.replace("_", "-")


def arrange_help(typer_app: typer.Typer) -> None:
    """Put every command and group of `typer_app` in its `HELP_PANELS` panel, panels and commands in that order
    (registration order follows module imports, which is no order for a reader); ValueError for one in no panel."""
    order = {name: i for i, name in enumerate(n for names in HELP_PANELS.values() for n in names)}
    panel = {name: title for title, names in HELP_PANELS.items() for name in names}
    for commands in (typer_app.registered_commands, typer_app.registered_groups):
        missing = [command_name(c) for c in commands if command_name(c) not in panel]
        if missing:
            raise ValueError(f"commands without a help panel (jobs.app.HELP_PANELS): {missing}")
        for command in commands:
            command.rich_help_panel = panel[command_name(command)]
        commands.sort(key=lambda c: order[command_name(c)])


def read_json_object(path: Path | None, what: str, option: str = "--config") -> dict:
    """The JSON object in the file `path` ({} for None), for a CLI option; typer.BadParameter (naming `option`)
    when the file cannot be read, is not JSON or holds something other than an object. `what`: what the object
    holds, for the message ("TrainConfig overrides")."""
    import json

    if path is None:
        return {}
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path}: expected a JSON object of {what}", param_hint=option)
    return value


def check_preset(name: str) -> None:
    """typer.BadParameter (--preset) for a name that is not a training preset (encoders/presets.py); the message
    reads as `comma_list`'s (bench quality --variants)."""
    from encoders.presets import PRESETS

    preset = OneOf(PRESETS, "preset")
    try:
        preset(name)
    except ValueError as error:
        raise typer.BadParameter(f"{error}; {preset.allowed}", param_hint="--preset") from None


RAY_ONLY = {"--ray-address": "a Ray cluster", "--workers": "Ray workers"}


def check_ray_only(engine: str, ray_address: str | None, workers: int | None) -> None:
    """typer.BadParameter for --ray-address or --workers without --engine ray: the job would run in this process and
    the option be ignored; with it, a BatchError for a Ray Client address (ray://…) without Ray Client installed."""
    if engine == "ray":
        from jobs.batch.ray_engine import check_client
        check_client(ray_address)  # said now, not after the data or the bundle has loaded
        return
    for option, value in (("--ray-address", ray_address), ("--workers", workers)):
        if value is not None:
            raise typer.BadParameter(f"only --engine ray uses {RAY_ONLY[option]}: pass --engine ray, or leave {option} "
                                     "out", param_hint=option)


def _api_max_k() -> int:
    """The API's limit on k (RECSYS_MAX_K), so the CLI accepts what the API accepts; its default when the
    environment's setting is invalid (the API reports that when it starts)."""
    try:
        return Settings().max_k
    except ValidationError:
        return Settings.model_fields["max_k"].default


MAX_K = _api_max_k()


ModelOpt = Annotated[str, typer.Option(help="BERT: local HF directory, hub name, or 'default' (offline MiniLM)")]
OutOpt = Annotated[Path, typer.Option("--out", file_okay=False, callback=writable_out, help="output directory")]
BundleDir = Annotated[Path, typer.Option("--bundle", help="bundle directory (or a model directory: newest version)")]
BundleData = Annotated[Path, typer.Option("--data", help="the dataset the bundle was built on")]
CpuThreads = Annotated[Optional[int], typer.Option("--threads", min=1, max=256, help="CPU threads (torch, FAISS, "
                                                   "BLAS; default: the libraries' own, every core)")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace a dataset already in --out")]
OnBadRowsOpt = Annotated[Literal["fail", "skip"], typer.Option(help="fail: stop and list every bad row; skip: "
                                                               "import the rest, bad rows → OUT/rejected.csv")]
MaxLength = Annotated[int, typer.Option(min=8, max=512, help="BERT tokens per item text")]
BatchSize = Annotated[int, typer.Option(min=1, max=4096, help="texts per BERT batch")]
Decay = Annotated[float, typer.Option(min=0.01, max=1.0, help="recency decay of the history pool")]
Seed = Annotated[int, typer.Option(min=0, help="random seed")]
Users = Annotated[int, typer.Option(min=1, max=10_000_000, help="synthetic customers")]
Items = Annotated[int, typer.Option(min=32, max=10_000_000, help="synthetic products (at least 2 per category)")]
Port = Annotated[int, typer.Option(min=1, max=65_535)]
IndexKind = Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_pq"]
IndexOpt = Annotated[IndexKind, typer.Option("--index", help="FAISS index: auto (exact below 50,000 items, IVF-PQ "
                                             "+ fp16 refine above), flat (exact), hnsw, ivf_flat, ivf_pq; the "
                                             "choice and its measured recall go into the manifest")]
EvalUsersOpt = Annotated[str, typer.Option("--eval-users", help="evaluate a seeded sample of this many users per "
                                           "split when there are more, or 'all'")]
StateDirOpt = Annotated[Path, typer.Option(envvar="RECSYS_STATE_DIR", help="the API's state directory (SQLite "
                                                                         "event store)")]
EventStoreOpt = Annotated[str, typer.Option(envvar="RECSYS_EVENT_STORE", help="sqlite or redis")]
RedisUrlOpt = Annotated[Optional[str], typer.Option(envvar="RECSYS_REDIS_URL", help="the Redis event store")]
RedisTimeoutOpt = Annotated[float, typer.Option(envvar="RECSYS_REDIS_TIMEOUT_S", min=0.01, max=600,
                                                help="seconds to wait for the Redis event store to accept a "
                                                     "connection or answer a command before the job stops")]
EVAL_USERS = "20000"
Pooling = Literal["auto", "mean", "cls"]
POOLING_HELP = ("token states → one vector: auto (what a sentence-transformers model declares in its modules.json, "
                "else mean), mean, or the [CLS] token")
PoolingOpt = Annotated[Pooling, typer.Option("--pooling", help=POOLING_HELP)]
EncoderOpt = Annotated[Literal["torch", "onnx", "onnx-int8"], typer.Option(
    "--encoder", help="item-text encoder on CPU: ONNX Runtime int8 (the default: 3.2× torch's items/s, cosine "
                      "≥ 0.99 to fp32, benchmarks/results/encoder.md), ONNX Runtime fp32, or torch fp32; on a GPU "
                      "torch runs")]


def bundle_name(value: str | None) -> str | None:
    """`--name` callback: one directory name, written under --out (never a path that leaves it)."""
    if value is not None and (not value.strip() or value in (".", "..") or "/" in value or "\\" in value):
        raise typer.BadParameter(f"{value!r} is not a bundle name: give one directory name (no '/' or '\\', not "
                                 "'.' or '..'); the bundle is written under --out")
    return value


def new_bundle_out(value: Path | None) -> Path | None:
    """`--out` callback of the commands that write a new bundle after a long job (train-ranker, refresh-stats,
    refit): a path that already exists, or one that cannot be written, is refused before the job starts, not after
    it."""
    if value is not None and value.exists():
        raise typer.BadParameter(f"{value} already exists: choose a new directory (or leave --out out: a new version "
                                 "beside the bundle)", param_hint="--out")
    return writable_out(value)


def check_beside(bundle: Path, out: Path | None) -> None:
    """Without --out, the new version goes beside `bundle` (in its model directory): BundleError, before
    the job, when that directory cannot be written (a read-only mount of the served models; was: the whole job,
    then an error naming a temporary directory). A `bundle` that cannot be resolved is left to the command's own
    loading, which says why."""
    if out is not None:
        return
    from recsys.artifacts import resolve_bundle
    from recsys.errors import BundleError

    try:
        parent = resolve_bundle(bundle).parent
    except (BundleError, OSError, ValueError):  # said by the command when it opens the bundle
        return
    reason = unwritable_reason(parent)
    if reason is not None:
        raise BundleError(f"the new version goes beside the bundle, in {parent}, which cannot be written ({reason}): "
                          "name a writable directory with --out")


NewBundleOut = Annotated[Optional[Path], typer.Option(file_okay=False, callback=new_bundle_out,
                                                      help="new bundle directory (default: a new version beside "
                                                           "BUNDLE)")]


def eval_sample(value: str) -> int | None:
    """--eval-users / --train-users: a positive number of examples (per split), or 'all'."""
    if value.strip().lower() == "all":
        return None
    try:
        n = int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"expected a number of users or 'all', got {value!r}") from None
    if n < 1:
        raise typer.BadParameter(f"expected a positive number of users or 'all', got {value!r}")
    return n


def cap_cpu_threads(threads: int | None) -> None:
    """`--threads` of a command that takes `CpuThreads`: caps torch, FAISS and BLAS for the rest of the process
    (None: left as they are)."""
    if threads is not None:
        from jobs.threads import limit_cpu_threads

        limit_cpu_threads(threads)
