"""Parameter groups: every parameter once, the backbones' rates scaled and decayed by depth, weight decay
only on weight matrices."""

from __future__ import annotations

import pytest
import torch

from hat.config import validate_train_config
from hat.losses import build_loss, loss_spec
from hat.models.hat import build_model
from hat.models.spec import model_spec
from hat.optim.build import build_optimizer
from hat.optim.param_groups import parameter_groups
from hat.run_spec import OptimSpec

LR = 1e-3


@pytest.fixture(scope="module")
def tiny():
    from conftest import compose_config

    cfg = compose_config("train", ["encoder=tiny", "loss=infonce"])  # a loss with a parameter of its own
    torch.manual_seed(0)
    return build_model(model_spec(cfg)), build_loss(loss_spec(cfg.loss))


def rates_by_name(model, loss, groups) -> dict[str, float]:
    """The rate of every parameter name, asserting that none is in two groups."""
    names = {id(p): n for n, p in model.named_parameters()} | {id(p): f"loss.{n}" for n, p in loss.named_parameters()}
    rates: dict[str, float] = {}
    for group in groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            assert name not in rates, f"{name} is in two groups"
            rates[name] = group["lr"]
    return rates


def test_defaults_make_one_group_holding_every_parameter(tiny):
    model, loss = tiny
    groups = parameter_groups(model, loss, LR)
    assert len(groups) == 1 and groups[0]["lr"] == LR and groups[0]["name"] == "all"
    expected = [*model.parameters(), *loss.parameters()]
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in expected]  # a plain optimizer's order


def test_backbone_scale_and_layer_decay_give_each_parameter_its_rate(tiny):
    model, loss = tiny
    rates = rates_by_name(model, loss, parameter_groups(model, loss, LR, backbone_lr_scale=0.1, layer_decay=0.5))
    trainable = {n for n, _ in model.named_parameters()} | {f"loss.{n}" for n, _ in loss.named_parameters()}
    assert set(rates) == trainable
    # the new parts learn at the base rate
    for name in ("image_proj.0.weight", "text_proj.2.bias", "image_encoder.stage_norms.1.weight", "loss.logit_scale"):
        assert rates[name] == LR
    # tiny Swin: stem 0, blocks 1..5 (the last stage with the final norm at the top, depth 5)
    assert rates["image_encoder.backbone.norm.weight"] == pytest.approx(LR * 0.1)
    assert rates["image_encoder.backbone.layers.3.blocks.0.mlp.fc1.weight"] == pytest.approx(LR * 0.1)
    assert rates["image_encoder.backbone.layers.2.blocks.1.attn.qkv.weight"] == pytest.approx(LR * 0.1 * 0.5)
    assert rates["image_encoder.backbone.patch_embed.proj.weight"] == pytest.approx(LR * 0.1 * 0.5**5)
    # BERT with 12 layers: embeddings 0, layer i at depth i + 1, the top (layer 11) at 12
    text = "text_encoder.model."
    assert rates[text + "encoder.layer.11.output.dense.weight"] == pytest.approx(LR * 0.1)
    assert rates[text + "encoder.layer.0.attention.self.query.weight"] == pytest.approx(LR * 0.1 * 0.5**11)
    assert rates[text + "embeddings.word_embeddings.weight"] == pytest.approx(LR * 0.1 * 0.5**12)


def test_backbone_scale_alone_makes_two_groups(tiny):
    model, loss = tiny
    groups = parameter_groups(model, loss, LR, backbone_lr_scale=0.1)
    assert sorted(g["lr"] for g in groups) == pytest.approx([LR * 0.1, LR])
    backbone = {id(p) for p in model.image_encoder.backbone.parameters()} | {
        id(p) for p in model.text_encoder.model.parameters()}
    slow = next(g for g in groups if g["lr"] < LR)
    assert {id(p) for p in slow["params"]} == backbone


def test_the_schedule_keeps_the_groups_ratios(tiny):
    model, loss = tiny
    spec = OptimSpec(name="adamw", lr=LR, weight_decay=0.05, schedule="cosine", warmup_steps=0, warmup_epochs=0.5,
                     step_size=1, gamma=0.1, min_lr_ratio=0.0, backbone_lr_scale=0.1, layer_decay=1.0, grad_clip=None)
    optimizer, schedule = build_optimizer(spec, model, loss, steps_per_epoch=10, total_steps=100)
    assert isinstance(optimizer, torch.optim.AdamW) and schedule.spec.warmup_steps == 5
    # with weight decay each rate has a decaying and a non-decaying group
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([LR * 0.1 / 5] * 2 + [LR / 5] * 2)


def optimizer_of(tiny, preset: str) -> torch.optim.Optimizer:
    """The optimizer ``optim=preset`` builds for the tiny model and its InfoNCE loss."""
    from conftest import TINY_RUN, compose_config

    spec = validate_train_config(compose_config("train", [*TINY_RUN, f"optim={preset}"])).optim
    return build_optimizer(spec, *tiny, steps_per_epoch=10, total_steps=100)[0]


def test_finetune_decays_weight_matrices_but_not_norms_biases_or_the_temperature(tiny):
    model, loss = tiny
    optimizer = optimizer_of(tiny, "finetune")
    names = {id(p): n for n, p in model.named_parameters()} | {id(p): f"loss.{n}" for n, p in loss.named_parameters()}
    decay, rate = {}, {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            decay[names[id(parameter)]], rate[names[id(parameter)]] = group["weight_decay"], group["lr"]
    assert len(decay) == len(names)  # every parameter once
    for name in ("image_proj.0.weight", "image_encoder.backbone.patch_embed.proj.weight",
                 "text_encoder.model.encoder.layer.11.attention.self.query.weight",
                 "text_encoder.model.embeddings.word_embeddings.weight"):
        assert decay[name] == 0.05, name
    for name in ("image_proj.0.bias", "image_encoder.stage_norms.1.weight", "image_encoder.backbone.norm.weight",
                 "text_encoder.model.embeddings.LayerNorm.weight",
                 "text_encoder.model.encoder.layer.11.output.dense.bias", "loss.logit_scale"):
        assert decay[name] == 0.0, name
    assert {name for name, value in decay.items() if value == 0.0} == {
        name for name, p in [*model.named_parameters(), *(("loss." + n, p) for n, p in loss.named_parameters())]
        if p.ndim <= 1}
    # the split keeps the rates: a bias learns at its weight's rate
    assert rate["image_encoder.backbone.norm.bias"] == rate["image_encoder.backbone.norm.weight"] == pytest.approx(
        rate["image_encoder.backbone.layers.3.blocks.0.mlp.fc1.weight"])
    names_of_groups = [group["name"] for group in optimizer.param_groups]
    assert len(set(names_of_groups)) == len(names_of_groups)
    assert {"lr_x1_decay", "lr_x1_no_decay", "lr_x0.1_decay", "lr_x0.1_no_decay"} <= set(names_of_groups)


def test_one_rate_with_weight_decay_makes_a_decay_and_a_no_decay_group(tiny):
    model, loss = tiny
    groups = parameter_groups(model, loss, LR, weight_decay=0.1)
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("decay", 0.1), ("no_decay", 0.0)]


def test_hats_preset_keeps_one_plain_group(tiny):
    model, loss = tiny
    assert parameter_groups(model, loss, LR, weight_decay=0.0) == parameter_groups(model, loss, LR)
    optimizer = optimizer_of(tiny, "hat")
    [group] = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.Adam) and group["name"] == "all" and group["weight_decay"] == 0.0
    assert [id(p) for p in group["params"]] == [id(p) for p in [*model.parameters(), *loss.parameters()]]
