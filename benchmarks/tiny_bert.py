"""A tiny randomly initialised BERT (2 layers, hidden 32) saved as a local HF directory: the unit tests' model, and the
benchmarks that time the serving code without real weights (`recsys bench catalogue`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


ARCHITECTURES = ("bert", "roberta", "electra", "mpnet", "distilbert")
"""What `build_tiny_bert` can build: BERT, and the other families the towers train (`encoders.layer_stack`)."""


def build_tiny_bert(directory: Path, corpus: Iterable[str], seed: int = 0, architecture: str = "bert") -> Path:
    """Word-level vocabulary from `corpus`, random weights from a fixed seed; `architecture` (one of
    ARCHITECTURES) picks the model's family, all with the same BERT word-piece tokenizer and sizes (ELECTRA's
    embeddings narrower than its layers, as ELECTRA's own checkpoints have them)."""
    import torch
    from transformers import AutoModel, BertTokenizerFast

    words = sorted({w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(SPECIAL + words) + "\n")
    # DistilBERT's own tokenizers give no token types (and its forward in transformers 4 refuses them)
    inputs = {"model_input_names": ["input_ids", "attention_mask"]} if architecture == "distilbert" else {}
    try:  # transformers 5 reads the vocabulary from `vocab` (and ignores `vocab_file`: every word was [UNK])
        tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, **inputs)
    except (TypeError, ValueError, OSError):
        tokenizer = None
    if tokenizer is None or len(tokenizer) != len(SPECIAL) + len(words):  # transformers 4
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, **inputs)
    if len(tokenizer) != len(SPECIAL) + len(words):
        raise RuntimeError(f"the tiny tokenizer has {len(tokenizer)} tokens, not the {len(SPECIAL) + len(words)} "
                           "of its vocabulary")
    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(architecture, len(SPECIAL) + len(words))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_config(architecture: str, vocab_size: int):
    """A 2-layer, 32-wide config of `architecture` (its pad token is the vocabulary's [PAD], id 0)."""
    from transformers import AutoConfig

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}: one of {', '.join(ARCHITECTURES)}")
    if architecture == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2,
                                    hidden_dim=64, max_position_embeddings=128, pad_token_id=0)
    sizes = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    if architecture == "roberta":  # positions count from pad_token_id + 1
        sizes["max_position_embeddings"] = 130
    if architecture == "electra":
        sizes["embedding_size"] = 16
    return AutoConfig.for_model(architecture, **sizes)
