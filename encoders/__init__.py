"""BERT encoders: the only package that imports torch / transformers / peft."""

from encoders.backbone import load_backbone, resolve_model_path
from encoders.text_encoder import TextEncoder

__all__ = ["TextEncoder", "load_backbone", "resolve_model_path"]
