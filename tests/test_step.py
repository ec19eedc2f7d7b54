"""GradCache: K chunks of B give the loss and gradients of one plain step on K x B (dropout off)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_RUN, compose_config
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator, PairDataset
from hat.data.spec import data_spec
from hat.data.transforms import eval_transform
from hat.engine.step import training_step
from hat.losses import build_loss, loss_spec
from hat.models.hat import build_model
from hat.models.spec import model_spec
from hat.models.text_encoder import build_tokenizer
from hat.runtime import resolve_runtime


@pytest.fixture(scope="module")
def setup():
    cfg = compose_config("train", TINY_RUN)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg)).eval()  # no dropout: the plain and chunked steps must compute one function
    splits = build_splits(data_spec(cfg.dataset), cfg.seed)
    collator = CaptionCollator(build_tokenizer(model_spec(cfg).text), 32, pad_to_max_length=True)
    pairs = PairDataset(splits["train"], eval_transform(cfg.encoder.image.image_size), cfg.seed)
    batch = collator([pairs[i] for i in range(0, 40, 5)])  # 8 pairs of 8 different images
    return cfg, model, batch


def _step(setup, chunks: int, loss_name: str = "hinge_hardest"):
    cfg, model, batch = setup
    model.zero_grad(set_to_none=True)
    runtime = resolve_runtime(cfg.hardware)
    loss_fn = build_loss(loss_spec(compose_config("train", [*TINY_RUN, f"loss={loss_name}"]).loss))
    loss = training_step(model, model, loss_fn, batch, runtime, runtime.grad_scaler(), chunks)
    return loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["hinge_hardest", "infonce"])
@pytest.mark.parametrize("chunks", [2, 4])
def test_chunked_step_equals_the_plain_step_on_the_whole_batch(setup, chunks, loss_name):
    plain_loss, plain_grads = _step(setup, 1, loss_name)
    loss, grads = _step(setup, chunks, loss_name)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys() and len(grads) > 10
    for name, grad in plain_grads.items():  # float32 noise, measured against each tensor's own scale
        error = (grads[name] - grad).abs().max().item()
        assert error <= 1e-4 * grad.abs().max().item() + 1e-6, (name, error)


def test_accumulate_trains_end_to_end(tmp_path, tiny_config):
    from hat.engine.checkpoint import load_checkpoint
    from hat.engine.loop import train

    train(tiny_config("train.batch_size=4", "train.accumulate=2", "train.epochs=1"), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 24 * 5 // 8
