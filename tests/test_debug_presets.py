"""debug=overfit does what its first comment says: the same few batches, at a constant rate, until
train/loss falls towards 0, whatever the experiment's own schedule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import CONF, compose_config
from hat.config import validate_train_config
from hat.losses import loss_spec

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("extra", [[], ["optim=finetune"]], ids=["its-optim", "finetune"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_overfit_holds_the_experiments_rate_and_all_negatives_whatever_its_schedule(experiment, extra):
    """A step or cosine schedule counts overfit's 3-batch epochs (quickstart: x0.1 every 6 steps, 1e-18
    by step 90), and so does the hinge's warmup (quickstart: hardest negatives after 6 steps, where
    random encoders collapse). debug comes after experiment and optim in conf/train.yaml, so the
    preset wins over both (optim=finetune: cosine after a 1-epoch warmup)."""
    plain = compose_config("train", [f"experiment={experiment}", *extra])
    cfg = compose_config("train", [f"experiment={experiment}", *extra, "debug=overfit"])
    assert cfg.optim.schedule == "constant" and cfg.optim.warmup_steps == 0 and cfg.optim.warmup_epochs == 0
    assert cfg.optim.lr == plain.optim.lr and cfg.train.overfit_batches == 3
    assert cfg.train.dropout is False
    if cfg.loss.name.startswith("hinge"):  # the quickstart's InfoNCE has no hardest negative to switch to
        assert loss_spec(cfg.loss).warmup_epochs == cfg.train.epochs


def test_the_command_line_still_wins_over_the_overfit_preset():
    cfg = compose_config("train", ["experiment=quickstart", "debug=overfit", "optim.schedule=cosine",
                                   "train.epochs=7", "train.dropout=true"])
    assert cfg.optim.schedule == "cosine" and cfg.loss.warmup_epochs == 7 and cfg.train.dropout is True


def test_the_overfit_batches_hold_one_caption_of_each_image(tiny_config, tmp_path):
    """Two captions of one image in a batch would be each other's negatives: a hinge loss could not
    fall below about 2 x margin for each such pair, however well the model fits."""
    from hat.data.build import build_splits
    from hat.engine.training_parts import _train_loader

    cfg = tiny_config("debug=overfit", "train.overfit_batches=2")
    spec = validate_train_config(cfg)
    split = build_splits(spec.data, cfg.seed)["train"]
    one_process, no_workers = SimpleNamespace(rank=0, world_size=1), SimpleNamespace(num_workers=0, pin_memory=False)
    pairs, sampler, _ = _train_loader(cfg, spec, split, None, one_process, no_workers)
    assert len(pairs) == len(split) and sampler.batches_per_epoch == 2
    for epoch in range(2):
        sampler.set_epoch(epoch)
        images = [pairs[index][2] for index in sampler]
        assert sorted(images) == list(range(16))  # 2 batches of 8: the first 16 images, once each
        assert {pairs[index][1] for index in sampler} == {split.records[i].captions[0] for i in range(16)}


@pytest.mark.slow
def test_the_quickstarts_overfit_run_fits_its_batches(tmp_path):
    """``python train.py experiment=quickstart debug=overfit``, as the README gives it: train/loss ends
    below a tenth of where it started (measured here: 3.6 -> 0.2 in its 300 steps with the quickstart's
    InfoNCE; 389 -> 11 when it used the hinge). Before, the step
    schedule cut the rate to 1e-18 by step 90, the hardest negative took over after 6 steps, and
    dropout and the five captions of each image (each the others' negative) kept the loss near 28."""
    from hat.engine.loop import train

    cfg = compose_config("train", ["experiment=quickstart", "debug=overfit", "hardware=cpu"])
    train(cfg, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [record["train/loss"] for record in records if "train/loss" in record]
    assert len(losses) == cfg.train.epochs * cfg.train.overfit_batches
    assert losses[-1] < losses[0] / 10, losses
