"""BERT-family backbones other than BERT: the towers run each one a layer at a time exactly as its own forward
does, LoRA finds its modules, and an architecture the towers cannot run is one clear error."""

import pytest
import torch

from benchmarks.tiny_bert import ARCHITECTURES, build_tiny_bert
from encoders.backbone import load_backbone
from encoders.layer_stack import layer_stack, lora_targets
from encoders.lora import attach_adapters
from encoders.pooling import mean_pool
from encoders.towers import AdaptedBert
from recsys.config import LoraConfig
from recsys.errors import SettingError

TEXTS = ["black mirrorless camera", "camera bag", "running shoe blue", "bag"]

ADAPTED_TOP_LAYER = {  # the default targets (BERT's names) as each architecture's modules, top layer only
    "bert": ["attention.output.dense", "attention.self.key", "attention.self.query", "attention.self.value",
             "intermediate.dense", "output.dense"],
    "mpnet": ["attention.attn.k", "attention.attn.o", "attention.attn.q", "attention.attn.v", "intermediate.dense",
              "output.dense"],
    "distilbert": ["attention.k_lin", "attention.out_lin", "attention.q_lin", "attention.v_lin", "ffn.lin1",
                   "ffn.lin2"],
}
ADAPTED_TOP_LAYER["roberta"] = ADAPTED_TOP_LAYER["electra"] = ADAPTED_TOP_LAYER["bert"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def architecture_dir(request, tmp_path_factory):
    corpus = TEXTS + ["running", "shoe"]
    return request.param, build_tiny_bert(tmp_path_factory.mktemp(request.param), corpus, architecture=request.param)


def _batch(tokenizer):
    return tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded rows: the mask matters


def test_cached_lower_layers_and_the_adapted_top_equal_each_architectures_own_forward(architecture_dir):
    name, directory = architecture_dir
    backbone, tokenizer = load_backbone(str(directory))
    assert backbone.config.model_type == name
    batch = _batch(tokenizer)
    with torch.no_grad():
        reference = mean_pool(backbone(**batch).last_hidden_state, batch["attention_mask"])
    assert torch.dist(reference[0], reference[2]) > 0.05
    for top in (1, None):  # one cached layer below the adapted one, and none
        bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=top)), top).eval()
        with torch.no_grad():
            hidden = bert.lower(batch["input_ids"], batch["attention_mask"])
            torch.testing.assert_close(bert.upper(hidden, batch["attention_mask"]), reference, atol=1e-5, rtol=1e-4)
        backbone = bert.model.unload()


def test_the_default_lora_targets_adapt_the_same_roles_in_every_architecture(architecture_dir):
    name, directory = architecture_dir
    backbone, _ = load_backbone(str(directory))
    adapted = attach_adapters(backbone, LoraConfig(top_layers=1))
    stack = layer_stack(backbone)
    wrapped = {n.split(".lora_A.")[0].removeprefix("base_model.model.") for n, _ in adapted.named_parameters()
               if ".lora_A." in n}
    prefix = f"{stack.path}.1."
    assert all(w.startswith(prefix) for w in wrapped)  # the top layer only
    assert sorted(w.removeprefix(prefix) for w in wrapped) == ADAPTED_TOP_LAYER[name]


def test_lora_adapters_and_full_fine_tuning_train_only_the_top_layer_of_every_architecture(architecture_dir):
    name, directory = architecture_dir
    backbone, tokenizer = load_backbone(str(directory))
    batch = _batch(tokenizer)
    for method in ("lora", "full"):
        model = attach_adapters(backbone, LoraConfig(method=method, top_layers=1))
        bert = AdaptedBert(model, 1, full=method == "full")
        tuned = [n for n, p in bert.named_parameters() if bert.tunes(n)]
        assert tuned and all(p.requires_grad == bert.tunes(n) for n, p in bert.named_parameters())
        stack = bert.stack
        assert {stack.layer_index(n.removeprefix("model.")) for n in tuned} == {1}
        before = {n: p.detach().clone() for n, p in bert.named_parameters()}
        optimizer = torch.optim.SGD([p for p in bert.parameters() if p.requires_grad], lr=0.5)
        torch.manual_seed(0)
        for _ in range(2):  # LoRA's B starts at zero: the second step moves A too
            loss = bert(batch["input_ids"], batch["attention_mask"]).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        moved = {n for n, p in bert.named_parameters() if not torch.equal(p, before[n])}
        assert moved and moved <= set(tuned), (name, method, sorted(moved - set(tuned))[:3])
        backbone = model.unload() if method == "lora" else load_backbone(str(directory))[0]


def test_an_architecture_the_towers_cannot_run_a_layer_at_a_time_is_one_setting_error(tmp_path):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("deberta-v2", vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64)
    backbone = AutoModel.from_config(config)  # built like BERT (encoder.layer), run otherwise: refused
    with pytest.raises(SettingError, match=r"knows the architectures bert, camembert, distilbert, electra, mpnet, "
                                           r"roberta, xlm-roberta; this model is 'deberta-v2'"):
        attach_adapters(backbone, LoraConfig())
    with pytest.raises(SettingError, match="'deberta-v2'"):
        AdaptedBert(backbone, None)


def test_a_target_no_module_has_is_told_with_the_layers_own_linear_modules(architecture_dir):
    name, directory = architecture_dir
    if name != "distilbert":
        pytest.skip("one architecture whose names differ from BERT's is enough")
    backbone, _ = load_backbone(str(directory))
    assert lora_targets(backbone, ("q_lin", "query")) == ["q_lin"]  # its own name and BERT's, once
    with pytest.raises(SettingError, match=r"\['querry'\] name no module of this distilbert model \(its layers' "
                                           r"linear modules: attention.q_lin, attention.k_lin, attention.v_lin, "
                                           r"attention.out_lin, ffn.lin1, ffn.lin2\)"):
        attach_adapters(backbone, LoraConfig(target_modules=("querry", "value")))


def _cli(*args):
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.replace("│", " ").split())


def test_recsys_train_fine_tunes_a_distilbert_and_refuses_a_deberta_in_one_line(tmp_path):
    """Both were tracebacks: DistilBERT keeps its layers under `transformer`, DeBERTa's take relative embeddings."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    assert _cli("import", "synthetic", "--out", tmp_path / "shop", "--users", 60, "--items", 80, "--seed", 3)[0] \
        .exit_code == 0
    words = ["tent", "mug", "shoe", "coffee", "card", "blue", "red", "black", "bag", "pan"]
    distil = build_tiny_bert(tmp_path / "distilbert", words, architecture="distilbert")
    result, flat = _cli("train", "--data", tmp_path / "shop", "--preset", "smoke", "--model", distil,
                        "--out", tmp_path / "art", "--name", "distil")
    assert result.exit_code == 0, result.output
    from recsys.artifacts import resolve_bundle

    meta = (resolve_bundle(tmp_path / "art" / "distil") / "encoder" / "adapter_config.json").read_text()
    assert '"q_lin"' in meta and '"lin2"' in meta  # the default targets, as DistilBERT names them
    result, flat = _cli("recommend", "--bundle", tmp_path / "art" / "distil", "--text", "blue tent", "--k", 3)
    assert result.exit_code == 0 and flat.count("matches “blue tent”") == 3, result.output

    deberta = tmp_path / "deberta"
    tokenizer = AutoTokenizer.from_pretrained(distil)
    AutoModel.from_config(AutoConfig.for_model("deberta-v2", vocab_size=len(tokenizer), hidden_size=32,
                                               num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64)).save_pretrained(deberta)
    tokenizer.save_pretrained(deberta)
    result, flat = _cli("train", "--data", tmp_path / "shop", "--preset", "smoke", "--model", deberta,
                        "--out", tmp_path / "art2")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "error: training runs the encoder a layer at a time" in flat and "'deberta-v2'" in flat
    assert not (tmp_path / "art2").exists()
