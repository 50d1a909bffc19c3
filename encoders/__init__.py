"""BERT encoders: the only package that imports torch / transformers / peft.

Names are resolved lazily, so `encoders.loading` can decide whether torch is needed at all."""

from importlib import import_module

_EXPORTS = {"TextEncoder": "encoders.text_encoder", "load_backbone": "encoders.backbone",
            "resolve_model_path": "encoders.backbone"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")
