"""The zero-shot item tower through ONNX Runtime: fp32, or int8 with dynamic quantisation of the linear layers
(`EncoderConfig.backend` = "onnx" / "onnx-int8"), with length-bucketed batching.

The graph is the one `recsys export` writes (`encoders.export`: BERT → pooling → L2 normalisation, dynamic batch
and length), checked against the PyTorch tower when it is exported (max |diff| < 1e-4), and cached per model
under `~/.cache/bert-recsys/onnx/` (or RECSYS_ONNX_CACHE; the int8 graph next to it), so only the first use pays
the export.
Batches hold texts of similar token length, padded to the longest of the batch and capped at
`TOKENS_PER_BATCH` tokens, so short texts are not padded to the longest text of the catalogue.
`recsys build` encodes with the int8 graph by default: on 10,000 shop texts and 2 cores it runs 3.2× torch fp32's
items/s at cosine ≥ 0.99 to fp32 and zero-shot NDCG@10 within 0.0011 on amazon-scientific
(benchmarks/results/encoder.md, `recsys bench encoder`).
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from encoders.backbone import import_transformers, resolve_model_path
from recsys.config import EncoderConfig
from recsys.errors import RecsysError
from recsys.towers import ItemTower

CACHE_DIR = Path(os.environ.get("RECSYS_ONNX_CACHE") or Path.home() / ".cache" / "bert-recsys" / "onnx")
"""Where exported graphs are kept (RECSYS_ONNX_CACHE overrides), keyed by `graph_key`."""
TOKENS_PER_BATCH = 4096
"""Padded tokens per ONNX Runtime call (batch size × longest text of the batch)."""
PARITY_TEXTS = ["waterproof 2-person tent", "Nordvik 24 MP Mirrorless Camera, black. Cameras. Nordvik. range: "
                "mid-range, sensor: 24 MP, type: mirrorless, colour: black", "coffee", "a longer product description "
                "with several attributes: size 42, colour navy, material leather, for trail running in the rain"]


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        raise RecsysError("the ONNX Runtime encoder needs the `onnx` extra: pip install 'bert-recsys[onnx]' "
                          "(in a clone: pip install -e '.[onnx]'), or use the torch backend") from None


def graph_key(config: EncoderConfig) -> str:
    """What the cached graph depends on: the model directory's files, pooling, normalisation, torch version."""
    import torch

    path = Path(resolve_model_path(config.model))
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.glob("*") if p.is_file()) \
        if path.is_dir() else [str(path)]
    payload = json.dumps({"model": str(path), "files": files, "pooling": config.pooling,
                          "normalize": config.normalize, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def graph_path(config: EncoderConfig, cache_dir: Path | None = None) -> Path:
    """The ONNX graph for `config` (exported and quantised on first use), fp32 or int8 by `config.backend`."""
    _require_onnx()
    directory = Path(cache_dir or CACHE_DIR) / graph_key(config)
    fp32, int8 = directory / "item_tower.onnx", directory / int8_graph_name()
    if not fp32.is_file():
        _export(config, fp32)
    if config.backend == "onnx-int8" and not int8.is_file():
        quantize_int8(fp32, int8)
    return int8 if config.backend == "onnx-int8" else fp32


def quantize_int8(fp32: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the graph's weight MatMuls, per output channel, leaving the feed-forward
    output projections (whose inputs, after GELU, have the widest range) in fp32. On MiniLM-L6 item texts this
    keeps the cosine to the fp32 vectors at ≥ 0.99 (0.994 min, 0.997 mean on 400 shop texts), where the
    default per-tensor quantisation of every MatMul gives 0.93 min, 0.96 mean. The projections are found by their
    module names: `output.dense` outside the attention (BERT, RoBERTa, ELECTRA, MPNet), `ffn.lin2` (DistilBERT).
    onnxruntime's advice to pre-process the graph first is not shown (the cosines above were measured without)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
             if node.op_type in INT8_SETTINGS["op_types"]]
    keep_fp32 = [name for name in nodes if re.search(INT8_SETTINGS["fp32"], name) and "attention" not in name]
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    advice = _Dropped("Please consider to run pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=getattr(QuantType, INT8_SETTINGS["weight_type"]),
                         per_channel=INT8_SETTINGS["per_channel"], op_types_to_quantize=INT8_SETTINGS["op_types"],
                         nodes_to_exclude=keep_fp32)
        os.replace(tmp, target)
    finally:
        logging.getLogger().removeFilter(advice)
        tmp.unlink(missing_ok=True)


INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul"],
                 "fp32": r"/(output/dense|ffn/lin2)/MatMul$"}
"""What `quantize_int8` does (`fp32`: the MatMuls outside the attention it leaves unquantised, by node name), named
in the int8 graph's file name (`int8_graph_name`)."""


def int8_graph_name() -> str:
    """The cached int8 graph's file name, which carries a digest of `INT8_SETTINGS`: a graph quantised by another
    rule (e.g. before DistilBERT's `ffn.lin2` was kept in fp32) is never taken for this one's."""
    digest = hashlib.sha256(json.dumps(INT8_SETTINGS, sort_keys=True).encode()).hexdigest()[:8]
    return f"item_tower.int8-{digest}.onnx"


class _Dropped(logging.Filter):
    """Drops the log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _export(config: EncoderConfig, target: Path) -> None:
    """The frozen tower as ONNX through `encoders.export` (parity-checked), written atomically."""
    import torch

    from encoders.export import _frozen_part, export_onnx
    from encoders.text_encoder import TextEncoder

    target.parent.mkdir(parents=True, exist_ok=True)
    torch_config = config.model_copy(update={"backend": "torch", "quantize_int8": False})
    part = _frozen_part("item_tower", TextEncoder.from_config(torch_config, torch.device("cpu")))
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        export_onnx(part, tmp, PARITY_TEXTS)
        os.replace(tmp, target)
    except RecsysError as error:  # e.g. a decoder model (GPT-2) whose graph does not export faithfully
        raise type(error)(f"{error}: this model does not run as an ONNX graph; --encoder torch (build, "
                          "evaluate, encode) encodes with PyTorch instead") from None
    finally:
        tmp.unlink(missing_ok=True)


class OnnxTextEncoder(ItemTower):
    """The frozen item tower like `encoders.text_encoder.TextEncoder`, through an ONNX Runtime session."""

    def __init__(self, session, tokenizer, config: EncoderConfig, dim: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self._dim = dim

    @classmethod
    def from_config(cls, config: EncoderConfig, threads: int | None = None,
                    cache_dir: Path | None = None) -> "OnnxTextEncoder":
        """Session on the cached graph for `config` (`threads`: intra-op threads; None: ONNX Runtime's default)."""
        import onnxruntime

        import_transformers()
        from transformers import AutoConfig, AutoTokenizer

        path = graph_path(config, cache_dir)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model_path = resolve_model_path(config.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        return cls(session, tokenizer, config, int(AutoConfig.from_pretrained(model_path).hidden_size))

    @property
    def dim(self) -> int:
        return self._dim

    def encode_texts(self, texts) -> np.ndarray:
        return self.encode(list(texts))

    def encode(self, texts: list[str], *, progress: bool = False, desc: str = "encoding") -> np.ndarray:
        """float32 [len(texts), dim] (L2-normalised when the config says so), in length-bucketed batches."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        tokens = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)["input_ids"]
        lengths = np.fromiter(map(len, tokens), np.int64, len(tokens))
        order = np.argsort(-lengths, kind="stable")
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            start = 0
            while start < len(order):
                width = int(lengths[order[start]])  # the longest text of this batch comes first
                size = max(1, min(self.config.batch_size * 4, TOKENS_PER_BATCH // max(width, 1)))
                rows = order[start:start + size]
                ids = np.full((len(rows), width), self.tokenizer.pad_token_id or 0, np.int64)
                mask = np.zeros((len(rows), width), np.int64)
                for n, row in enumerate(rows.tolist()):
                    ids[n, :lengths[row]] = tokens[row]
                    mask[n, :lengths[row]] = 1
                out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
                bar.update(len(rows))
                start += len(rows)
        return out


__all__ = ["OnnxTextEncoder", "graph_path", "graph_key", "CACHE_DIR", "TOKENS_PER_BATCH"]
