"""Encoders return the tapped levels with the shapes of docs/model.md; projections, norms and freezing."""

from __future__ import annotations

import pytest
import torch

from hat.config import ConfigError
from hat.models.hat import build_model
from hat.models.image_encoder import build_image_encoder
from hat.models.spec import ImageEncoderSpec, TextEncoderSpec, model_spec
from hat.models.text_encoder import build_tokenizer


@pytest.fixture(scope="module")
def tiny_model():
    from conftest import compose_config

    cfg = compose_config("train", ["encoder=tiny"])
    torch.manual_seed(0)
    return cfg, build_model(model_spec(cfg)).eval()


def _tokens(cfg, captions):
    tokenizer = build_tokenizer(model_spec(cfg).text)
    return tokenizer(captions, padding=True, truncation=True, max_length=32, return_tensors="pt")


def test_tiny_model_levels_pair_text_layers_with_the_top_swin_stages(tiny_model):
    cfg, model = tiny_model
    assert model.text_encoder.taps == [4, 10, 12] and model.image_encoder.taps == [2, 3, 4]
    size = cfg.encoder.image.image_size  # 64 px: stages of 16x16, 8x8, 4x4, 2x2 tokens
    images = model.encode_images(torch.randn(3, 3, size, size))
    assert [tuple(x.shape) for x in images] == [(3, 64, 64), (3, 16, 64), (3, 4, 64)]
    tokens = _tokens(cfg, ["a red circle", "two shapes: a small blue square left of a green triangle"])
    captions, lengths = model.encode_captions(tokens["input_ids"], tokens["attention_mask"])
    assert [tuple(x.shape) for x in captions] == [(2, tokens["input_ids"].shape[1], 64)] * 3
    assert lengths.tolist() == tokens["attention_mask"].sum(1).tolist()


def test_hat_swin_b_stages_give_784_196_49_tokens_of_256_512_1024_channels():
    cfg = ImageEncoderSpec(family="swin", name="swin_base_patch4_window7_224", depth=4, image_size=224)
    encoder = build_image_encoder(cfg, taps=[2, 3, 4], pretrained=False).eval()
    assert encoder.widths == [256, 512, 1024]
    assert set(encoder.stage_norms) == {"1", "2", "3"}  # stage 4 uses the backbone's own final norm
    assert [n.weight.requires_grad for n in encoder.stage_norms.values()] == [False, True, True]
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, 224, 224))
    assert [tuple(x.shape) for x in tokens] == [(1, 784, 256), (1, 196, 512), (1, 49, 1024)]


def test_vit_taps_are_layers():
    cfg = ImageEncoderSpec(
        family="vit", name="vit_base_patch16_224", depth=6, image_size=32,
        kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 6, "num_heads": 2},
    )
    encoder = build_image_encoder(cfg, taps=[3, 6], pretrained=False)
    tokens = encoder(torch.randn(2, 3, 32, 32))
    assert [tuple(x.shape) for x in tokens] == [(2, 16, 32), (2, 16, 32)]


def test_scores_do_not_depend_on_how_much_a_caption_is_padded(tiny_model):
    cfg, model = tiny_model
    images = torch.randn(2, 3, cfg.encoder.image.image_size, cfg.encoder.image.image_size)
    short = _tokens(cfg, ["a red circle"])
    padded = {
        key: torch.cat([value, torch.zeros(1, 7, dtype=value.dtype)], dim=1) for key, value in short.items()
    }
    with torch.no_grad():
        plain = model.score(*model(images, short["input_ids"], short["attention_mask"]))
        extra = model.score(*model(images, padded["input_ids"], padded["attention_mask"]))
    torch.testing.assert_close(plain, extra, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stage_norms", [True, False], ids=["with-stage-norms", "stage-norms-train"])
def test_freezing_leaves_the_projections_and_maybe_the_stage_norms_trainable(tiny_model, stage_norms):
    """HAT (``train.freeze_stage_norms=true``) freezes the tapped stages' new norms with the
    backbones; with false they train from the start. Unfrozen, all trains but BERT's pooler and the
    norm of the untapped first stage."""
    cfg, model = tiny_model
    model.set_encoders_frozen(True, stage_norms=stage_norms)
    try:
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        norms = () if stage_norms else ("image_encoder.stage_norms.2.", "image_encoder.stage_norms.3.")
        assert trainable == {
            name for name, _ in model.named_parameters() if name.startswith(("image_proj.", "text_proj.", *norms))
        }
    finally:
        model.set_encoders_frozen(False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        name for name, _ in model.named_parameters()
        if name.startswith(("image_encoder.stage_norms.1.", "text_encoder.model.pooler."))
    }


def test_a_tokenizer_without_its_vocabulary_is_an_error(tmp_path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"only 5 tokens"):
        build_tokenizer(TextEncoderSpec(name=None, tokenizer=str(tmp_path), num_layers=1, max_length=8))


def test_a_text_config_naming_no_tokenizer_is_an_error():
    with pytest.raises(ConfigError, match=r"encoder\.text\.tokenizer and encoder\.text\.name are both null"):
        build_tokenizer(TextEncoderSpec(name=None, tokenizer=None, num_layers=1, max_length=8))


def test_declared_text_depth_must_match_the_model():
    from conftest import compose_config

    cfg = compose_config("train", ["encoder=tiny", "encoder.text.config.num_hidden_layers=6"])
    with pytest.raises(ValueError, match=r"encoder\.text\.num_layers=12 but .* has 6 layers"):
        build_model(model_spec(cfg))


def test_cnn_stages_are_levels_each_with_a_new_norm():
    cfg = ImageEncoderSpec(family="cnn", name="efficientnet_lite0", depth=5, image_size=224)
    encoder = build_image_encoder(cfg, taps=[3, 4, 5], pretrained=False).eval()
    assert encoder.widths == [40, 112, 320]
    assert set(encoder.stage_norms) == {"1", "2", "3", "4", "5"}  # a CNN has no LayerNorm of its own
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, 224, 224))
    assert [tuple(x.shape) for x in tokens] == [(1, 784, 40), (1, 196, 112), (1, 49, 320)]


def test_grad_checkpointing_gives_the_same_loss_and_gradients(tiny_model):
    cfg, model = tiny_model
    images = torch.randn(3, 3, cfg.encoder.image.image_size, cfg.encoder.image.image_size)
    tokens = _tokens(cfg, ["a red circle", "a blue square on the left", "two small green triangles"])

    def loss_and_grads():
        model.zero_grad()
        loss = model.score(*model(images, tokens["input_ids"], tokens["attention_mask"])).diagonal().sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = loss_and_grads()
    model.set_grad_checkpointing(True)
    model.train()  # checkpointing is active in training mode; dropout is zero below
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "drop_prob"):  # timm's DropPath
            module.drop_prob = 0.0
    try:
        checkpointed = loss_and_grads()
    finally:
        model.set_grad_checkpointing(False)
        model.eval()
    torch.testing.assert_close(checkpointed[0], plain[0])
    torch.testing.assert_close(checkpointed[1], plain[1], rtol=1e-4, atol=1e-6)


def test_fused_attention_gives_the_same_features_as_timms_own():
    """Swin's shifted windows put a bias and a mask into scaled-dot-product attention."""
    from conftest import compose_config
    from hat.models.image_encoder import set_fused_attention

    cfg = model_spec(compose_config("train", ["encoder=tiny"])).image
    torch.manual_seed(0)
    encoder = build_image_encoder(cfg, taps=[2, 3, 4], pretrained=False).eval()
    assert all(m.fused_attn for m in encoder.modules() if hasattr(m, "fused_attn"))
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        fused = encoder(pixels)
        assert set_fused_attention(encoder, False) == 5  # one per Swin block of the tiny depths [1, 1, 2, 1]
        plain = encoder(pixels)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_training_without_dropout_repeats_itself_and_batch_norms_still_learn():
    """``train.dropout=false`` (debug=overfit): the same batch gives the same features at the same
    weights, while a CNN's batch norms keep updating their statistics as in training."""
    from conftest import compose_config

    cfg = compose_config("train", ["encoder=tiny"])
    torch.manual_seed(0)
    model = build_model(model_spec(cfg))
    images, tokens = torch.randn(2, 3, 64, 64), _tokens(cfg, ["a red circle", "two blue squares"])

    def features():
        image_levels, caption_levels, _ = model(images, tokens["input_ids"], tokens["attention_mask"])
        return torch.cat([image_levels[-1].flatten(), caption_levels[-1].flatten()])

    model.train_mode()
    assert not torch.equal(features(), features())  # BERT's dropout
    model.train_mode(dropout=False)
    assert torch.equal(features(), features())

    cnn = build_image_encoder(ImageEncoderSpec(family="cnn", name="efficientnet_lite0", depth=5, image_size=64),
                              taps=[3, 4, 5], pretrained=False)
    with_batch_norms = type(model)(cnn, model.text_encoder, embed_dim=16)
    with_batch_norms.train_mode(dropout=False)
    norms = [m for m in with_batch_norms.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.training for m in norms)
    assert not any(m.training for m in with_batch_norms.modules() if m not in norms)
    before = norms[0].running_mean.clone()
    with_batch_norms.encode_images(images)
    assert not torch.equal(before, norms[0].running_mean)
