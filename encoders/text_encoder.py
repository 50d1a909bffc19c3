"""Batch-encode texts with a BERT backbone: tokenise, pool, L2-normalise, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from encoders.backbone import load_backbone, with_resolved_pooling
from encoders.pooling import pool
from recsys.config import EncoderConfig
from recsys.towers import ItemTower

if TYPE_CHECKING:  # (imported by `load_backbone`, through `import_transformers`: this module may be imported by a
    from transformers import PreTrainedModel, PreTrainedTokenizerBase  # server's request, in any thread)


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("auto", "fp32", "fp16")


class TextEncoder(ItemTower):
    """Item tower for zero-shot use: BERT → pooling → L2 normalisation (item text: the raw `text` field).

    `precision`: "auto" = bf16 autocast on CUDA, fp32 on CPU; "fp32" everywhere; "fp16" = half-precision
    weights (CUDA only)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EncoderConfig,
                 device: torch.device | None = None, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.config = with_resolved_pooling(config)
        self.tokenizer = tokenizer
        self.device = device or pick_device()
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 encoding needs a CUDA device")
        self.precision = precision
        self.model = model.to(self.device).eval()
        if precision == "fp16":
            self.model = self.model.half()

    @classmethod
    def from_config(cls, config: EncoderConfig, device: torch.device | None = None,
                    precision: str = "auto") -> "TextEncoder":
        model, tokenizer = load_backbone(config.model)
        encoder = cls(model, tokenizer, config, device, precision)
        return quantize_dynamic_int8(encoder) if config.quantize_int8 else encoder

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode_texts(self, texts) -> np.ndarray:
        return self.encode(list(texts))

    @torch.inference_mode()
    def encode(self, texts: list[str], *, progress: bool = False, desc: str = "encoding",
               prefetch: bool | None = None) -> np.ndarray:
        """float32 [len(texts), dim]; texts are sorted by length internally for fast batching. `prefetch`
        (default: on a GPU) tokenises the next batch in a background thread while the model runs this one: on a
        GPU the tokeniser, not the model, is otherwise what sets the pace."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = self.config.batch_size
        batches = [order[start:start + size] for start in range(0, len(texts), size)]
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.device.type == "cuda" and self.precision == "auto")

        def tokenize(rows: np.ndarray):
            return self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                  max_length=self.config.max_length, return_tensors="pt")

        prefetch = self.device.type == "cuda" if prefetch is None else prefetch
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            for rows, tokens in zip(batches, _one_ahead(tokenize, batches, prefetch)):
                batch = tokens.to(self.device)
                with autocast:
                    hidden = self.model(**batch).last_hidden_state
                vectors = pool(hidden.float(), batch["attention_mask"], self.config.pooling)
                if self.config.normalize:
                    vectors = F.normalize(vectors, dim=-1)
                out[rows] = vectors.cpu().numpy()
                bar.update(len(rows))
        return out


def _one_ahead(work: Callable, items: Sequence, ahead: bool) -> Iterator:
    """work(item) for each item, in order; with `ahead`, the next item's runs in a background thread meanwhile."""
    if not ahead:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(work, items[0])
        for following in items[1:]:
            done = pending.result()
            pending = pool.submit(work, following)
            yield done
        yield pending.result()


def load_text_encoder(config: EncoderConfig, device: torch.device | None = None, precision: str = "auto"):
    """The zero-shot item tower for `config`: torch (`TextEncoder`), or ONNX Runtime fp32 / int8
    (`encoders.onnx_encoder.OnnxTextEncoder`) by `config.backend`; the ONNX backends are CPU paths, so on a
    GPU the torch tower runs instead."""
    config = with_resolved_pooling(config)
    on_gpu = device.type != "cpu" if device is not None else torch.cuda.is_available()
    if config.backend == "torch" or on_gpu:
        return TextEncoder.from_config(config, device, precision)
    from encoders.onnx_encoder import OnnxTextEncoder

    return OnnxTextEncoder.from_config(config, threads=torch.get_num_threads())


def quantize_dynamic_int8(encoder):
    """int8 dynamic quantisation of every nn.Linear in the encoder's model (CPU inference only)."""
    model = getattr(encoder, "model", None)
    if model is None or getattr(encoder, "device", torch.device("cpu")).type != "cpu":
        return encoder
    encoder.model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return encoder
