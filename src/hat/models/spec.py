"""A model's settings resolved once into plain typed values: what the model builders take.

:func:`model_spec` checks ``encoder`` and ``alignment`` of a run config (or of a stored one, whose
optional keys may be missing: they get their defaults here, in one place) and resolves the taps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hat.checks import to_plain
from hat.models.config_checks import validate_model_config


@dataclass(frozen=True)
class ImageEncoderSpec:
    """``encoder.image``: a timm ``name`` of ``family`` (swin, vit, cnn) with ``depth`` stages or
    layers at ``image_size`` px; local ``weights`` (or None), scaled-dot-product attention
    (``fused_attention``) and extra ``timm.create_model`` ``kwargs``."""

    family: str
    name: str
    depth: int
    image_size: int
    weights: str | None = None
    fused_attention: bool = True
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TextEncoderSpec:
    """``encoder.text``: a BERT ``name`` (hub name, folder, ``pkg:MODULE`` or None for one built from
    ``config``), its ``tokenizer`` (None: ``name``), ``num_layers`` and ``max_length`` tokens."""

    name: str | None
    tokenizer: str | None
    num_layers: int
    max_length: int
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """The whole model: both encoders, the shared width, whether the encoders start pretrained, the
    1-based taps each level pairs (``text_taps[k]`` with ``image_taps[k]``) and the similarity's
    ``direction``, ``smooth`` (lambda) and ``block_elements``."""

    image: ImageEncoderSpec
    text: TextEncoderSpec
    embed_dim: int
    pretrained: bool
    text_taps: tuple[int, ...]
    image_taps: tuple[int, ...]
    direction: str = "i2t"
    smooth: float = 9.0
    block_elements: int | None = None


def model_spec(cfg) -> ModelSpec:
    """The :class:`ModelSpec` of a run config's ``encoder`` and ``alignment`` (checked first: a bad
    value raises :class:`hat.checks.ConfigError` naming it)."""
    text_taps, image_taps = validate_model_config(cfg)
    image, text, align = cfg.encoder.image, cfg.encoder.text, cfg.alignment
    return ModelSpec(
        image=ImageEncoderSpec(
            family=image.family, name=image.name, depth=image.depth, image_size=image.image_size,
            weights=image.get("weights"), fused_attention=bool(image.get("fused_attention", True)),
            kwargs=to_plain(image.get("kwargs")) or {},
        ),
        text=TextEncoderSpec(
            name=text.get("name"), tokenizer=text.get("tokenizer"), num_layers=text.num_layers,
            max_length=text.max_length, config=to_plain(text.get("config")) or {},
        ),
        embed_dim=cfg.encoder.embed_dim,
        pretrained=bool(cfg.encoder.pretrained),
        text_taps=tuple(text_taps),
        image_taps=tuple(image_taps),
        direction=align.direction,
        smooth=float(align.smooth),
        block_elements=align.get("block_elements"),
    )
