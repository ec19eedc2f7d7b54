"""Converting the authors' released HAT checkpoints (hat.models.hat_release) into our model.

The released layout comes from the list of the real checkpoints' state-dict entries
(RELEASE_KEYS); the Swin layout differences are checked against timm 0.4's code, copied below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from timm.models.swin_transformer import PatchMerging, checkpoint_filter_fn

from conftest import compose_config, save_lightning_checkpoint
from hat.models.hat import build_model
from hat.models.hat_release import (
    RECOMPUTED_BUFFERS,
    convert_release_state_dict,
    is_release_state_dict,
    load_release_checkpoint,
    release_to_model_key,
)
from hat.models.spec import model_spec
from hat.models.text_encoder import build_tokenizer

RELEASE_KEYS = Path(__file__).parent / "data" / "hat_checkpoint_keys.json"  # copy of shared/reference

# (released name, our name), written out by hand: every kind of renaming the conversion does.
SPOT_CHECKS = [
    ("cross_modal_image_transform_1.weight", "image_proj.0.weight"),
    ("cross_modal_image_transform_2.weight", "image_proj.1.weight"),
    ("cross_modal_image_transform.weight", "image_proj.2.weight"),
    ("cross_modal_image_transform.bias", "image_proj.2.bias"),
    ("cross_modal_text_transform_1.weight", "text_proj.0.weight"),
    ("cross_modal_text_transform_2.bias", "text_proj.1.bias"),
    ("cross_modal_text_transform.weight", "text_proj.2.weight"),
    ("vit_model.norm_0.weight", "image_encoder.stage_norms.1.weight"),
    ("vit_model.norm_1.bias", "image_encoder.stage_norms.2.bias"),
    ("vit_model.norm_2.weight", "image_encoder.stage_norms.3.weight"),
    ("vit_model.norm.weight", "image_encoder.backbone.norm.weight"),
    ("vit_model.patch_embed.proj.weight", "image_encoder.backbone.patch_embed.proj.weight"),
    ("vit_model.layers.2.blocks.5.attn.qkv.weight", "image_encoder.backbone.layers.2.blocks.5.attn.qkv.weight"),
    (
        "vit_model.layers.2.blocks.5.attn.relative_position_bias_table",
        "image_encoder.backbone.layers.2.blocks.5.attn.relative_position_bias_table",
    ),
    ("vit_model.layers.2.blocks.5.mlp.fc2.bias", "image_encoder.backbone.layers.2.blocks.5.mlp.fc2.bias"),
    ("vit_model.layers.1.downsample.reduction.weight", "image_encoder.backbone.layers.2.downsample.reduction.weight"),
    ("vit_model.layers.1.downsample.norm.bias", "image_encoder.backbone.layers.2.downsample.norm.bias"),
    (
        "text_transformer.encoder.layer.0.attention.self.query.weight",
        "text_encoder.model.encoder.layer.0.attention.self.query.weight",
    ),
    (
        "text_transformer.encoder.layer.0.output.LayerNorm.bias",
        "text_encoder.model.encoder.layer.0.output.LayerNorm.bias",
    ),
    ("text_transformer.embeddings.word_embeddings.weight", "text_encoder.model.embeddings.word_embeddings.weight"),
    ("text_transformer.pooler.dense.weight", "text_encoder.model.pooler.dense.weight"),
]

RELEASE_SUFFIX = {"0": "_1", "1": "_2", "2": ""}
TO_RELEASE = [  # our name prefix -> the release's; the first rule that matches applies
    (r"(image|text)_proj\.(\d)\.", lambda m: f"cross_modal_{m[1]}_transform{RELEASE_SUFFIX[m[2]]}."),
    (r"image_encoder\.stage_norms\.(\d)\.", lambda m: f"vit_model.norm_{int(m[1]) - 1}."),
    (r"image_encoder\.backbone\.layers\.(\d)\.downsample\.", lambda m: f"vit_model.layers.{int(m[1]) - 1}.downsample."),
    (r"image_encoder\.backbone\.", lambda m: "vit_model."),
    (r"text_encoder\.model\.", lambda m: "text_transformer."),
]


def to_release_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> the released layout (the inverse of the conversion, written independently)."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in TO_RELEASE:
            if re.match(pattern, key):
                renamed[re.sub("^" + pattern, replacement, key)] = value
                break
        else:
            raise KeyError(f"no released name for {key}")
    return renamed


def release_entries() -> list[dict]:
    return json.loads(RELEASE_KEYS.read_text())["keys"]


def random_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names, shapes and dtypes of the released checkpoints' state dict."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for entry in release_entries():
        dtype = getattr(torch, entry["dtype"])
        if dtype.is_floating_point:
            state[entry["name"]] = torch.randn(entry["shape"], generator=generator, dtype=dtype)
        else:
            state[entry["name"]] = torch.zeros(entry["shape"], dtype=dtype)
    return state


@pytest.fixture(scope="module")
def hat_model():
    """The full-size model (Swin-B, BERT-base) with random weights; built once for this module."""
    return build_model(model_spec(compose_config("train", ["encoder=hat", "encoder.pretrained=false"])))


def tiny_model(seed: int):
    torch.manual_seed(seed)
    return build_model(model_spec(compose_config("train", ["encoder=tiny"]))).eval()


def tiny_release(model) -> dict[str, torch.Tensor]:
    """``model``'s weights in the released layout, with the buffers the released files also hold."""
    return to_release_layout({**dict(model.named_buffers()), **model.state_dict()})


@pytest.mark.slow
def test_a_released_checkpoint_loads_whole_into_the_full_size_model(hat_model, tmp_path):
    release = random_release_state()
    path = tmp_path / "f30k.ckpt"
    save_lightning_checkpoint(path, release)

    load_release_checkpoint(path, hat_model)

    ours = hat_model.state_dict()
    for release_key, our_key in SPOT_CHECKS:
        assert torch.equal(ours[our_key], release[release_key]), (release_key, our_key)
    parameters = {entry["name"] for entry in release_entries() if entry["kind"] == "parameter"}
    as_released = to_release_layout(ours)
    assert set(as_released) == parameters
    assert all(torch.equal(value, release[key]) for key, value in as_released.items())


def test_swin_renaming_agrees_with_timms_filter_for_original_swin_weights(hat_model):
    backbone = hat_model.image_encoder.backbone
    swin = {
        entry["name"].removeprefix("vit_model."): torch.empty(entry["shape"], device="meta")
        for entry in release_entries()
        if entry["name"].startswith("vit_model.") and not re.match(r"vit_model\.norm_\d", entry["name"])
    }

    timm_names = set(checkpoint_filter_fn(swin, backbone))

    ours = {release_to_model_key("vit_model." + key) for key in swin if not key.endswith(RECOMPUTED_BUFFERS)}
    assert ours == {"image_encoder.backbone." + name for name in timm_names}


def old_patch_merging(x, norm, reduction):
    """timm 0.4.12 ``PatchMerging.forward`` on ``(B, H*W, C)`` tokens."""
    batch, length, channels = x.shape
    side = int(length**0.5)
    x = x.view(batch, side, side, channels)
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    return reduction(norm(x.view(batch, -1, 4 * channels)))


def test_patch_merging_orders_channels_as_timm_0_4_did():
    torch.manual_seed(0)
    merge = PatchMerging(dim=8)
    torch.nn.init.normal_(merge.norm.weight)
    x = torch.randn(2, 6, 6, 8)

    expected = old_patch_merging(x.flatten(1, 2), merge.norm, merge.reduction)

    torch.testing.assert_close(merge(x).flatten(1, 2), expected, rtol=0, atol=1e-6)


def old_relative_position_index(window: int) -> torch.Tensor:
    """timm 0.4.12 ``WindowAttention.relative_position_index``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


def old_attn_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """timm 0.4.12 ``SwinTransformerBlock.attn_mask`` of a shifted block."""
    regions = torch.zeros(resolution, resolution)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for index, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[rows, cols] = index
    n = resolution // window
    windows = regions.view(n, window, n, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0)


def test_the_dropped_swin_buffers_are_recomputed_as_timm_0_4_had_them(hat_model):
    backbone = hat_model.image_encoder.backbone
    released_masks = {
        entry["name"].removeprefix("vit_model.") for entry in release_entries() if entry["name"].endswith(".attn_mask")
    }
    masked = set()
    for stage_index, stage in enumerate(backbone.layers):
        for block_index, block in enumerate(stage.blocks):
            assert torch.equal(block.attn.relative_position_index, old_relative_position_index(7))
            if block.attn_mask is not None:
                masked.add(f"layers.{stage_index}.blocks.{block_index}.attn_mask")
                expected = old_attn_mask(block.input_resolution[0], 7, 3)
                assert torch.equal(block.attn_mask, expected)
    assert masked == released_masks


def test_a_converted_tiny_model_scores_exactly_as_the_original(tmp_path):
    original = tiny_model(seed=0)
    path = tmp_path / "tiny.ckpt"
    save_lightning_checkpoint(path, tiny_release(original))
    converted = tiny_model(seed=1)
    tokenizer = build_tokenizer(model_spec(compose_config("train", ["encoder=tiny"])).text)
    captions = tokenizer(
        ["a dog runs on the grass", "two people ride bikes", "a red car"], padding=True, return_tensors="pt"
    )
    images = torch.randn(2, 3, 64, 64)
    batch = (images, captions["input_ids"], captions["attention_mask"])
    with torch.no_grad():
        expected = original.score(*original(*batch))
        assert not torch.allclose(converted.score(*converted(*batch)), expected)

        load_release_checkpoint(path, converted)

        torch.testing.assert_close(converted.score(*converted(*batch)), expected, rtol=0, atol=1e-6)


def test_every_unplaced_missing_or_misshaped_tensor_is_reported():
    model = tiny_model(seed=0)
    release = tiny_release(model)
    del release["text_transformer.pooler.dense.bias"], release["vit_model.norm_1.weight"]
    release["cross_modal_image_transform_3.weight"] = torch.zeros(2)
    release["vit_model.head.weight"] = torch.zeros(2)
    release["cross_modal_text_transform.weight"] = torch.zeros(3, 5)

    with pytest.raises(ValueError) as error:
        convert_release_state_dict(release, model)

    message = str(error.value)
    for name in [
        "cross_modal_image_transform_3.weight",
        "vit_model.head.weight",
        "text_encoder.model.pooler.dense.bias",
        "image_encoder.stage_norms.2.weight",
        "cross_modal_text_transform.weight -> text_proj.2.weight: (3, 5) in the release, (64, 32) in the model",
    ]:
        assert name in message


def test_a_model_with_other_levels_is_refused():
    torch.manual_seed(0)
    model = build_model(model_spec(compose_config("train", ["encoder=tiny", "alignment.levels=[4,8,12]"])))

    with pytest.raises(ValueError, match=r"alignment\.levels=\[4, 10, 12\]"):
        convert_release_state_dict(tiny_release(tiny_model(seed=0)), model)


def test_a_checkpoint_that_is_not_a_release_is_refused_naming_the_file(tmp_path):
    model = tiny_model(seed=0)
    path = tmp_path / "ours.ckpt"
    save_lightning_checkpoint(path, model.state_dict())

    assert not is_release_state_dict(model.state_dict())
    assert is_release_state_dict(tiny_release(model))
    with pytest.raises(ValueError, match=r"ours\.ckpt is not a released HAT checkpoint"):
        load_release_checkpoint(path, model)


def authors_trained_tensors(frozen: bool) -> set[str]:
    """The released model's parameters that HAT's own training updates, in our names. Its code
    (``meter_module.py``) sets ``requires_grad=False`` on the whole Swin (``vit_model``, the stage
    norms ``norm_0..2`` included) and on BERT's embeddings, encoder and pooler, and gives them back
    after the validation of epoch index 10, all but the pooler. Of what it gives back, ``norm_0``
    gets no gradient: its forward never uses Swin's first stage."""
    names = [entry["name"] for entry in release_entries() if entry["kind"] == "parameter"]
    if frozen:
        trained = [name for name in names if name.startswith("cross_modal_")]
    else:
        trained = [name for name in names
                   if not name.startswith(("text_transformer.pooler.", "vit_model.norm_0."))]
    return {release_to_model_key(name) for name in trained}


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "unfrozen"])
def test_the_tensors_trained_in_each_freeze_phase_are_the_authors(hat_model, frozen):
    """train.freeze_stage_norms=true (the default): the tensors that get a gradient while the
    encoders are frozen (epochs 0-10 of experiment=hat_f30k) and after are HAT's own lists (12 and
    all but the pooler's and the unused first-stage norm's)."""
    hat_model.set_encoders_frozen(frozen)
    hat_model.zero_grad(set_to_none=True)
    try:
        ids = torch.randint(1000, 2000, (2, 12))
        scores = hat_model.score(*hat_model(torch.randn(2, 3, 224, 224), ids, torch.ones_like(ids)))
        scores.sum().backward()
        trained = {name for name, p in hat_model.named_parameters() if p.grad is not None}
        requiring = {name for name, p in hat_model.named_parameters() if p.requires_grad}
    finally:
        hat_model.set_encoders_frozen(False)
        hat_model.zero_grad(set_to_none=True)
    assert trained == requiring == authors_trained_tensors(frozen)
    assert len(trained) == 12 if frozen else len(trained) > 400
