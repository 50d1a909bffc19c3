"""LoRA / AdaLoRA adapters: only adapter weights train, peft format on disk, merging is exact."""

import pytest
import torch

from encoders.backbone import load_backbone
from encoders.lora import (adapted_layers, attach_adapters, is_adapter_parameter, merged_backbone,
                           parameter_counts, save_adapters)
from encoders.training import Trainer
from recsys.config import EncoderConfig, LoraConfig, TowerConfig, TrainConfig
from recsys.data.synthetic import generate_shop
from recsys.splits import split_dataset


def small_config(model_dir, **overrides) -> TrainConfig:
    values = dict(encoder=EncoderConfig(model=str(model_dir)), lora=LoraConfig(rank=4, top_layers=1),
                  tower=TowerConfig(dim=16, item_max_length=24, history_max_length=48, seq_layers=1),
                  epochs=1, batch_size=32, lr=3e-3, adapter_lr=1e-2, valid_sample=40)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_changes_only_adapter_weights(tiny_bert_dir):
    shop = generate_shop(n_users=60, n_items=120, seed=0)
    trainer = Trainer(shop, split_dataset(shop), small_config(tiny_bert_dir), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.bert.named_parameters()}
    assert not any(p.requires_grad for n, p in trainer.model.bert.named_parameters() if not is_adapter_parameter(n))
    trainer.fit()
    changed = {n for n, p in trainer.model.bert.named_parameters() if not torch.equal(before[n], p)}
    assert changed, "the adapters did not move"
    assert all(is_adapter_parameter(n) for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed)
    # adapters only in the top layer: the lower (cached) layer carries none
    assert not any("layer.0." in n for n in before if is_adapter_parameter(n))
    counts = trainer.parameters
    assert 0 < counts["adapter"] < counts["trainable"] < counts["total"]


def test_adalora_attaches_and_checks_ranks(tiny_bert_dir):
    backbone, _ = load_backbone(str(tiny_bert_dir))
    model = attach_adapters(backbone, LoraConfig(method="adalora", rank=6, adalora_target_rank=2, top_layers=None),
                            total_steps=100)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_parameter(n) for n in trainable)
    assert any("lora_E" in n for n in trainable)
    with pytest.raises(ValueError, match="smaller"):
        attach_adapters(load_backbone(str(tiny_bert_dir))[0], LoraConfig(method="adalora", rank=4,
                                                                         adalora_target_rank=4))


def test_adalora_ranks_are_checked_with_the_settings():
    """`recsys train --rank 4` (the cpu preset's AdaLoRA prunes to 4) or such a --config: refused with the settings,
    'invalid setting: lora: …' (was: a ValueError traceback when the adapters were attached, after loading the data
    and the backbone)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="lora\n  Value error, AdaLoRA prunes from rank 4 to adalora_target_rank "
                                              "4: the target must be smaller"):
        TrainConfig.model_validate({"lora": {"method": "adalora", "rank": 4}})
    assert TrainConfig.model_validate({"lora": {"method": "lora", "rank": 4}}).lora.rank == 4


def test_adapters_save_in_peft_format_and_merge_exactly(tiny_bert_dir, tmp_path):
    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    assert adapted_layers(backbone, LoraConfig(top_layers=1)) == [1]
    model = attach_adapters(backbone, LoraConfig(rank=4, top_layers=None))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    counts = parameter_counts(model)
    assert 0 < counts["trainable"] < counts["total"]
    assert sorted(save_adapters(model, tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]
    batch = tokenizer(["black mirrorless camera", "running socks blue"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        adapted = model(**batch).last_hidden_state
        merged = merged_backbone(model).eval()(**batch).last_hidden_state
        plain = load_backbone(str(tiny_bert_dir))[0](**batch).last_hidden_state
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain, adapted, atol=1e-4)


def test_attaching_and_loading_adapters_raise_no_deprecation_noise_but_keep_other_warnings(tiny_bert_dir, tmp_path):
    import warnings

    from encoders.lora import load_adapters, quiet_checkpointing_alias

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = attach_adapters(load_backbone(str(tiny_bert_dir))[0], LoraConfig(rank=4, top_layers=1))
        save_adapters(model, tmp_path)
        load_adapters(load_backbone(str(tiny_bert_dir))[0], tmp_path)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_checkpointing_alias():
            warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
            warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else"]


def test_target_modules_that_name_no_module_are_a_setting_error(tiny_bert_dir):
    """A mistyped lora.target_modules: a SettingError naming the setting (one CLI `error:` line; was peft's
    NoMatchingPeftModuleError traceback); a suffix that does name modules ("dense") is accepted."""
    from recsys.errors import SettingError

    backbone, _ = load_backbone(str(tiny_bert_dir))
    with pytest.raises(SettingError, match=r"lora.target_modules \['querry'\] name no module of this bert model "
                                           r"\(its layers' linear modules: attention.self.query, attention.self.key"):
        attach_adapters(backbone, LoraConfig(target_modules=("querry", "value")))
    adapted = attach_adapters(backbone, LoraConfig(target_modules=("dense",)))
    wrapped = sorted({n.split(".lora_A.")[0].removeprefix("base_model.model.")
                      for n, _ in adapted.named_parameters() if ".lora_A." in n})
    assert wrapped == ["encoder.layer.1.attention.output.dense", "encoder.layer.1.intermediate.dense",
                       "encoder.layer.1.output.dense"]  # every *.dense of the adapted top layer
