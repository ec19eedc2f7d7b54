"""Every size, count and rate of the config is type- and range-checked before any work, naming the field."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_RUN, compose_config, make_karpathy_dataset
from hat.config import (
    ConfigError,
    require_int,
    require_int_list,
    require_number,
    validate_eval_config,
    validate_train_config,
)

# (overrides of the tiny run config, the message expected): each names the field, the value and what is allowed.
BAD_TYPES = [
    (["train.batch_size=abc"], r"train\.batch_size='abc' must be an integer >= 2 \(the loss needs negatives"),
    (["train.batch_size=4.5"], r"train\.batch_size=4\.5 must be an integer >= 2"),
    (["train.batch_size=true"], r"train\.batch_size=true must be an integer >= 2"),
    (["train.batch_size=1"], r"train\.batch_size=1 must be an integer >= 2"),
    (["train.batch_size=null"], r"train\.batch_size=null must be an integer >= 2"),
    (["train.epochs=0"], r"train\.epochs=0 must be an integer >= 1"),
    (["train.epochs=true"], r"train\.epochs=true must be an integer >= 1"),
    (["train.max_steps=2.5"], r"train\.max_steps=2\.5 must be an integer >= 1 or null"),
    (["train.accumulate=0"], r"train\.accumulate=0 must be an integer >= 1 \(GradCache chunks"),
    (["train.freeze_epochs=-1"], r"train\.freeze_epochs=-1 must be an integer >= 0"),
    (["train.log_every=0"], r"train\.log_every=0 must be an integer >= 1"),
    (["optim.lr=abc"], r"optim\.lr='abc' must be a finite number > 0"),
    (["optim.lr=0"], r"optim\.lr=0 must be a finite number > 0"),
    (["optim.lr=-1"], r"optim\.lr=-1 must be a finite number > 0"),
    (["optim.lr=nan"], r"optim\.lr=nan must be a finite number > 0"),
    (["optim.lr=inf"], r"optim\.lr=inf must be a finite number > 0"),
    (["optim.lr=true"], r"optim\.lr=true must be a finite number > 0"),
    (["optim.weight_decay=-0.1"], r"optim\.weight_decay=-0\.1 must be a finite number >= 0"),
    (["optim.step_size=2.5"], r"optim\.step_size=2\.5 must be an integer >= 1 \(epochs between"),
    (["optim.gamma=0"], r"optim\.gamma=0 must be a finite number > 0"),
    (["optim.grad_clip=abc"], r"optim\.grad_clip='abc' must be a finite number > 0 or null"),
    (["optim.name=sgd"], r"optim\.name='sgd' is not one of \('adam', 'adamw'\)"),
    (["optim.schedule=linear"], r"optim\.schedule='linear' is not one of \('step', 'cosine', 'constant'\)"),
    (["optim.warmup_steps=2.5"], r"optim\.warmup_steps=2\.5 must be an integer >= 0"),
    (["optim.warmup_epochs=-1"], r"optim\.warmup_epochs=-1 must be a finite number >= 0"),
    (["optim.warmup_steps=10", "optim.warmup_epochs=1"], r"give the warmup in steps or in epochs"),
    (["optim.min_lr_ratio=1.5"], r"optim\.min_lr_ratio=1\.5 must be a finite number >= 0 and <= 1"),
    (["optim.backbone_lr_scale=0"], r"optim\.backbone_lr_scale=0 must be a finite number > 0"),
    (["optim.layer_decay=1.2"], r"optim\.layer_decay=1\.2 must be a finite number > 0 and <= 1"),
    (["train.early_stop=0"], r"train\.early_stop=0 must be an integer >= 1 or null"),
    (["loss.margin=abc"], r"loss\.margin='abc' must be a finite number >= 0 \(HAT uses 0\.2\)"),
    (["loss.warmup_epochs=1.5"], r"loss\.warmup_epochs=1\.5 must be an integer >= 0"),
    (["loss=infonce", "loss.temperature=nan"], r"loss\.temperature=nan must be a finite number > 0"),
    (["loss=infonce", "loss.learnable_temperature=maybe"],
     r"loss\.learnable_temperature='maybe' must be true or false"),
    (["alignment.levels=4"], r"alignment\.levels=4 must be a non-empty list of distinct integers >= 1 and <= 12"),
    (["alignment.levels=[]"], r"alignment\.levels=\[\] must be a non-empty list"),
    (["alignment.levels=[0]"], r"alignment\.levels=\[0\]: 0 is outside 1\.\.12, the 12 layers of the text encoder"),
    (["alignment.levels=[4,4]"], r"alignment\.levels=\[4, 4\] must be distinct"),
    (["alignment.levels=[12,4]"], r"alignment\.levels=\[12, 4\] must be ascending"),
    (["alignment.levels=[4,true]"], r"alignment\.levels=\[4, true\]: true is outside 1\.\.12"),
    (["alignment.image_levels=3"], r"alignment\.image_levels=3 must be a non-empty list .* or null"),
    (["alignment.smooth=abc"], r"alignment\.smooth='abc' must be a finite number > 0 \(HAT uses 9\.0\)"),
    (["alignment.block_elements=1.5"], r"alignment\.block_elements=1\.5 must be an integer >= 1 or null"),
    (["+eval.levels=3"], r"eval\.levels=3 must be a non-empty list of distinct integers >= 1 or null"),
    (["+eval.levels=[0]"], r"eval\.levels=\[0\]: 0 is not an integer >= 1"),
    (["+eval.levels=[2,2]"], r"eval\.levels=\[2, 2\] must be distinct"),
    (["eval.batch_size=0"], r"eval\.batch_size=0 must be an integer >= 1"),
    (["eval.batch_size=abc"], r"eval\.batch_size='abc' must be an integer >= 1"),
    (["encoder.embed_dim=abc"], r"encoder\.embed_dim='abc' must be an integer >= 1"),
    (["encoder.image.image_size=0"], r"encoder\.image\.image_size=0 must be an integer >= 1"),
    (["encoder.image.depth=4.0"], r"encoder\.image\.depth=4\.0 must be an integer >= 1"),
    (["encoder.text.max_length=abc"], r"encoder\.text\.max_length='abc' must be an integer >= 1"),
    (["encoder.text.num_layers=0"], r"encoder\.text\.num_layers=0 must be an integer >= 1"),
    (["dataset.num_val=0"], r"dataset\.num_val=0 must be an integer >= 1"),
    (["dataset.num_train=abc"], r"dataset\.num_train='abc' must be an integer >= 1"),
    (["dataset.num_test=1.5"], r"dataset\.num_test=1\.5 must be an integer >= 1"),
    (["dataset.render_size=0"], r"dataset\.render_size=0 must be an integer >= 1"),
    (["dataset.captions_per_image=6"], r"dataset\.captions_per_image=6 must be an integer >= 1 and <= 5"),
    (["dataset.val_images=0"], r"dataset\.val_images=0 must be an integer >= 1 or null"),
    (["dataset.test_protocols={all: 0}"], r"dataset\.test_protocols\.all=0 must be an integer >= 1"),
    (["dataset.test_protocols=5"], r"dataset\.test_protocols=5 must be null or a mapping"),
    (["dataset.train_crop_scale=[0.5]"], r"dataset\.train_crop_scale=\[0\.5\] must be \[MIN, MAX\]"),
    (["dataset.train_crop_scale=[0,1]"], r"dataset\.train_crop_scale\[0\]=0 must be a finite number > 0 and <= 1"),
    (["dataset.train_crop_scale=[0.9,0.5]"], r"dataset\.train_crop_scale=\[0\.9, 0\.5\] must be .* MIN <= MAX"),
    (["hardware.num_workers=-1"], r"hardware\.num_workers=-1 must be an integer >= 0"),
    (["hardware.num_workers=1.5"], r"hardware\.num_workers=1\.5 must be an integer >= 0"),
    (["++hardware.dist_timeout=0"], r"hardware\.dist_timeout=0 must be a finite number > 0 \(seconds"),
    (["++hardware.dist_timeout=abc"], r"hardware\.dist_timeout='abc' must be a finite number > 0"),
    (["logger.init_timeout=abc"], r"logger\.init_timeout='abc' must be a finite number > 0"),
    (["logger.examples.queries=-1"], r"logger\.examples\.queries=-1 must be an integer >= 0"),
    (["logger.examples.thumbnail=4.5"], r"logger\.examples\.thumbnail=4\.5 must be an integer >= 8"),
    (["seed=-1"], r"seed=-1 must be an integer >= 0"),
    (["seed=abc"], r"seed='abc' must be an integer >= 0"),
]


def overrides_id(value):
    """A test id: the overrides, joined (the expected message is left out)."""
    return " ".join(value) if isinstance(value, list) else None


@pytest.mark.parametrize(("overrides", "message"), BAD_TYPES, ids=overrides_id)
def test_bad_types_and_ranges_fail_naming_field_value_and_what_is_allowed(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_train_config(tiny_config(*overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset=coco", "dataset.val_images=abc"], r"dataset\.val_images='abc' must be an integer >= 1 or null"),
        (["dataset=coco", "dataset.test_protocols.coco1k=0"], r"dataset\.test_protocols\.coco1k=0 must be an integer"),
        (["dataset=f30k", "dataset.captions_per_image=abc"], r"dataset\.captions_per_image='abc' must be an integer"),
    ],
    ids=overrides_id,
)
def test_dataset_counts_on_disk_are_checked_before_the_root(tiny_training_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_train_config(tiny_training_config(*overrides, "dataset.root=/nonexistent"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["optim.lr=1", "alignment.smooth=9", "loss.margin=0"],  # ints are numbers
        ["train.batch_size=2", "hardware.num_workers=0", "train.max_steps=null", "optim.grad_clip=null"],
        ["+eval.levels=[3,1]", "++hardware.dist_timeout=60.5", "dataset.train_crop_scale=[1,1]"],
        ["alignment.levels=[12]", "alignment.image_levels=[4]", "alignment.block_elements=1", "seed=0"],
        ["optim=finetune", "optim.layer_decay=1", "optim.min_lr_ratio=1", "train.early_stop=1"],
        ["optim.schedule=constant", "optim.warmup_epochs=0.5", "optim.name=adamw"],
        ["dataset.test_protocols={a: 2, b: 1}", "dataset.val_images=4", "dataset.captions_per_image=1"],
    ],
    ids=" ".join,
)
def test_good_edge_values_pass(tiny_config, overrides):
    validate_train_config(tiny_config(*overrides))


@pytest.mark.parametrize("overrides", [[], ["encoder=hat"], ["encoder=vit"], ["encoder=cnn"]], ids=" ".join)
def test_default_and_released_encoders_pass_the_training_checks(overrides):
    validate_train_config(compose_config("train", ["dataset=shapes", *overrides]))


@pytest.mark.parametrize("name", ["coco", "f30k"])
def test_datasets_on_disk_pass_the_training_checks(tmp_path, name):
    root = make_karpathy_dataset(tmp_path, name)
    validate_train_config(compose_config("train", [f"dataset={name}", f"dataset.root={root}"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.levels=3"], r"eval\.levels=3 must be a non-empty list of distinct integers >= 1 or null"),
        (["eval.levels=[]"], r"eval\.levels=\[\] must be a non-empty list"),
        (["eval.levels=[1,1]"], r"eval\.levels=\[1, 1\] must be distinct"),
        (["eval.levels=[a]"], r"eval\.levels=\['a'\]: 'a' is not an integer >= 1"),
        (["eval.batch_size=0"], r"eval\.batch_size=0 must be an integer >= 1"),
        (["eval.batch_size=2.5"], r"eval\.batch_size=2\.5 must be an integer >= 1"),
    ],
    ids=overrides_id,
)
def test_evaluate_config_eval_section_is_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_eval_config(compose_config("evaluate", ["checkpoint=x.pt", *overrides]))


GOOD_EVAL = [[], ["eval.levels=[2,3]"], ["eval.levels=[3]", "eval.batch_size=1"], ["eval.levels=null"]]


@pytest.mark.parametrize("overrides", GOOD_EVAL, ids=" ".join)
def test_evaluate_config_good_eval_sections_pass(overrides):
    validate_eval_config(compose_config("evaluate", ["checkpoint=x.pt", *overrides]))


def test_helpers_return_good_values_and_refuse_bools_floats_and_non_finite_numbers():
    assert require_int("a", 3, 1) == 3 and require_int("a", None, 1, optional=True) is None
    assert require_number("b", 2, 0, exclusive=True) == 2 and require_number("b", 0.5, 0, maximum=1) == 0.5
    assert require_int_list("c", [3, 1], 1) == [3, 1]
    for bad in (True, 3.0, "3", None, 0):
        with pytest.raises(ConfigError, match=r"^a="):
            require_int("a", bad, 1)
    for bad in (True, "1", math.nan, math.inf, -math.inf, None, 0, 1.5):
        with pytest.raises(ConfigError, match=r"^b="):
            require_number("b", bad, 0, exclusive=True, maximum=1)
    for bad in (3, [], (1, 2), [1, 1], [1.0], [False], None):
        with pytest.raises(ConfigError, match=r"^c="):
            require_int_list("c", bad, 1)


@pytest.mark.parametrize(
    ("override", "field"),
    [("train.batch_size=abc", "train.batch_size='abc'"), ("eval.batch_size=0", "eval.batch_size=0")],
)
def test_cli_bad_type_exits_2_naming_the_field_without_a_traceback_or_checkpoints(tmp_path, override, field):
    result = subprocess.run(  # timeout: a hang guard only, not a speed bound
        [sys.executable, "train.py", *TINY_RUN, "logger=none", override, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, timeout=600, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {field} must be" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.rglob("*.pt")) and not (tmp_path / "checkpoints").exists()
    log = (tmp_path / "train.log").read_text()  # stopped at the config check: no device, dataset or model yet
    assert "] - device " not in log and "] - dataset " not in log and "] - model: " not in log, log
