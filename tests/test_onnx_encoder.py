"""The ONNX Runtime item tower (fp32 and int8) agrees with the PyTorch tower on a tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import EncoderConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from encoders.onnx_encoder import OnnxTextEncoder, graph_path  # noqa: E402
from encoders.text_encoder import TextEncoder, load_text_encoder  # noqa: E402

TEXTS = ["red tent", "Nordvik 24 MP Mirrorless Camera, black. Cameras. Nordvik. range: mid-range",
         "coffee beans, dark roast, 250 g", "a", "trail running shoes size 42 navy " * 6, "laptop sleeve"] * 7


@pytest.fixture(scope="module")
def encoders(tiny_bert_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx-cache")
    config = EncoderConfig(model=str(tiny_bert_dir), max_length=32, batch_size=4)
    reference = TextEncoder.from_config(config, torch.device("cpu"))
    fp32 = OnnxTextEncoder.from_config(config.model_copy(update={"backend": "onnx"}), threads=1, cache_dir=cache)
    int8 = OnnxTextEncoder.from_config(config.model_copy(update={"backend": "onnx-int8"}), threads=1, cache_dir=cache)
    return config, cache, reference, fp32, int8


def test_onnx_fp32_matches_torch_and_int8_stays_close(encoders):
    config, _, reference, fp32, int8 = encoders
    expected = reference.encode(TEXTS)
    got = fp32.encode(TEXTS)
    assert got.shape == expected.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    quantised = int8.encode(TEXTS)
    cosine = (quantised * expected).sum(axis=1)  # both L2-normalised
    assert cosine.min() > 0.95
    assert np.allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-4)
    # parity of vectors that differ: the six texts (two pairs of them as many tokens long) lie apart in every
    # backend, each int8 vector nearest to its own text's PyTorch one (all [UNK] encoded equal lengths alike)
    distinct = [TEXTS.index(t) for t in dict.fromkeys(TEXTS)]
    for vectors in (expected, got, quantised):
        distances = np.linalg.norm(vectors[distinct, None] - vectors[None, distinct], axis=-1)
        assert distances[~np.eye(len(distinct), dtype=bool)].min() > 0.05
    nearest = (quantised[distinct] @ expected[distinct].T).argmax(axis=1)
    assert nearest.tolist() == list(range(len(distinct)))


def test_length_buckets_do_not_change_vectors(encoders, monkeypatch):
    """Batches of similar length (the order restored afterwards) give each text the vector it gets alone."""
    import encoders.onnx_encoder as module

    _, _, _, fp32, _ = encoders
    batched = fp32.encode(TEXTS)
    monkeypatch.setattr(module, "TOKENS_PER_BATCH", 1)  # one text per call
    alone = fp32.encode(TEXTS)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert fp32.encode([]).shape == (0, 32)


def test_graphs_are_cached_and_the_backend_is_chosen_by_config(encoders):
    config, cache, _, _, _ = encoders
    fp32_path = graph_path(config.model_copy(update={"backend": "onnx"}), cache)
    int8_path = graph_path(config.model_copy(update={"backend": "onnx-int8"}), cache)
    assert fp32_path.is_file() and int8_path.is_file() and fp32_path.parent == int8_path.parent
    import onnx

    ops = [node.op_type for node in onnx.load(str(int8_path)).graph.node]
    kept = [node.name for node in onnx.load(str(int8_path)).graph.node if node.op_type == "MatMul"
            and node.name.endswith("/output/dense/MatMul") and "attention" not in node.name]
    assert "DynamicQuantizeLinear" in ops or "DynamicQuantizeMatMul" in ops  # weight MatMuls run in int8
    assert len(kept) == 2  # the tiny BERT's two feed-forward output projections stay fp32
    assert type(load_text_encoder(config)) is TextEncoder and config.backend == "torch"  # the default backend
    _, _, _, fp32, int8 = encoders
    for backend, expected in (("onnx", fp32), ("onnx-int8", int8)):
        chosen = load_text_encoder(config.model_copy(update={"backend": backend}), torch.device("cpu"))
        assert type(chosen) is OnnxTextEncoder and chosen.config.backend == backend
        np.testing.assert_allclose(chosen.encode(TEXTS[:6]), expected.encode(TEXTS[:6]), atol=1e-6)


@pytest.mark.parametrize("architecture", ["bert", "distilbert"])
def test_int8_keeps_each_architectures_feed_forward_output_in_fp32_without_onnxruntimes_advice(architecture,
                                                                                               tmp_path, caplog):
    """The fp32 exception named BERT's modules only: a DistilBERT's every MatMul was quantised (and onnxruntime's
    'consider pre-processing' warning reached the user's terminal on every first build)."""
    import onnx

    from benchmarks.tiny_bert import build_tiny_bert

    model = build_tiny_bert(tmp_path / architecture, ["black", "camera", "bag", "shoe"], architecture=architecture)
    with caplog.at_level("WARNING"):
        int8 = graph_path(EncoderConfig(model=str(model), backend="onnx-int8"), tmp_path / "cache")
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    nodes = {node.name: node.op_type for node in onnx.load(str(int8)).graph.node}
    output = "ffn/lin2" if architecture == "distilbert" else "output/dense"
    float_outputs = [n for n, op in nodes.items() if n.endswith(f"/{output}/MatMul") and "attention" not in n
                     and op == "MatMul"]
    assert len(float_outputs) == 2  # one per layer, left in fp32
    assert not [n for n, op in nodes.items() if op == "MatMul" and ("q_lin" in n or "/query/" in n)]  # quantised


def test_an_int8_graph_quantised_by_another_rule_is_not_taken_from_the_cache(tmp_path, monkeypatch):
    """The cache is keyed by the model's files and torch; the int8 graph's name also carries the quantisation rule,
    so a graph cached under an earlier rule (stop 56 changed which MatMuls stay fp32) is quantised again."""
    import encoders.onnx_encoder as onnx_encoder
    from benchmarks.tiny_bert import build_tiny_bert

    model = build_tiny_bert(tmp_path / "bert", ["black", "camera", "bag", "shoe"])
    config, cache = EncoderConfig(model=str(model), backend="onnx-int8"), tmp_path / "cache"
    int8 = graph_path(config, cache)
    assert int8.name == onnx_encoder.int8_graph_name() and int8.name != "item_tower.int8.onnx"
    (int8.parent / "item_tower.int8.onnx").write_bytes(b"a graph from before the rule had a name")
    assert graph_path(config, cache) == int8  # the name of the rule in force, not the old file
    made = int8.stat().st_mtime_ns
    monkeypatch.setitem(onnx_encoder.INT8_SETTINGS, "fp32", r"/nothing/MatMul$")
    other = graph_path(config, cache)
    assert other != int8 and other.is_file() and int8.stat().st_mtime_ns == made  # quantised again, beside it


def test_a_model_whose_graph_does_not_match_its_tower_names_the_torch_encoder(tmp_path, monkeypatch):
    """A decoder model (a tiny GPT-2) failed `recsys build`'s default ONNX encoder with the parity error alone."""
    import encoders.export
    from benchmarks.tiny_bert import build_tiny_bert
    from recsys.errors import BundleError

    def mismatched(part, path, texts):
        raise BundleError("ONNX export of item_tower does not match the PyTorch tower (max |diff| 5.42e-01)")

    monkeypatch.setattr(encoders.export, "export_onnx", mismatched)
    model = build_tiny_bert(tmp_path / "bert", ["black", "camera"])
    with pytest.raises(BundleError, match=r"max \|diff\| 5\.42e-01\): this model does not run as an ONNX graph; "
                                          r"--encoder torch \(build, evaluate, encode\) encodes with PyTorch instead"):
        graph_path(EncoderConfig(model=str(model), backend="onnx-int8"), tmp_path / "cache")
