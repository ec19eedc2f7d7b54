"""Checks of a model's settings (``encoder`` and ``alignment``), before anything is built."""

from __future__ import annotations

from hat.alignment import DIRECTIONS
from hat.checks import ConfigError, require_int, require_int_list, require_number
from hat.models.levels import IMAGE_FAMILIES, default_image_levels


def validate_model_config(cfg) -> tuple[list[int], list[int]]:
    """Checks of ``encoder`` and ``alignment``: levels within the encoders' depths, and settings.
    Returns the taps they resolve to: (text layers, image stages or layers), both 1-based."""
    text, image, align = cfg.encoder.text, cfg.encoder.image, cfg.alignment
    if image.family not in IMAGE_FAMILIES:
        raise ConfigError(f"encoder.image.family={image.family!r} is not one of {IMAGE_FAMILIES}")
    if cfg.encoder.pretrained and not text.get("name"):
        raise ConfigError(
            f"encoder.pretrained=true but encoder.text.name is null (encoder={cfg.encoder.name}): "
            f"these encoders exist only with random weights; set encoder.pretrained=false"
        )
    _check_encoder_sizes(cfg.encoder)
    levels = _require_levels("alignment.levels", align.levels, text.num_layers, "layers of the text encoder")
    image_levels = _require_levels(
        "alignment.image_levels", align.get("image_levels"), image.depth, "taps of the image encoder", optional=True
    )
    if image_levels is None:
        image_levels = default_image_levels(levels, image.family, image.depth, text.num_layers)
    elif len(image_levels) != len(levels):
        raise ConfigError(
            f"alignment.image_levels={image_levels} has {len(image_levels)} levels but "
            f"alignment.levels={levels} has {len(levels)}; they must pair one to one"
        )
    if align.direction not in DIRECTIONS:
        raise ConfigError(f"alignment.direction={align.direction!r} is not one of {DIRECTIONS}")
    require_number("alignment.smooth", align.smooth, 0, exclusive=True, why="HAT uses 9.0")
    require_int("alignment.block_elements", align.block_elements, 1, optional=True)
    return levels, list(image_levels)


def _check_encoder_sizes(cfg) -> None:
    """The sizes of ``encoder``: the embedding width, the image side, the caption length and the depths."""
    require_int("encoder.embed_dim", cfg.embed_dim, 1)
    require_int("encoder.image.image_size", cfg.image.image_size, 1, why="pixels, the side of the square input")
    require_int("encoder.image.depth", cfg.image.depth, 1, why="stages or layers of the image encoder")
    require_int("encoder.text.max_length", cfg.text.max_length, 1, why="tokens per caption")
    require_int("encoder.text.num_layers", cfg.text.num_layers, 1, why="layers of the text encoder")


def _require_levels(field: str, value, depth: int, what: str, optional: bool = False) -> list[int] | None:
    """``alignment.levels`` or ``alignment.image_levels``: distinct, ascending taps in ``1..depth``, the ``depth``
    ``what`` (e.g. "layers of the text encoder")."""
    levels = require_int_list(field, value, 1, maximum=depth, what=f"{depth} {what}", optional=optional)
    if levels is not None and levels != sorted(levels):
        raise ConfigError(f"{field}={levels} must be ascending")
    return levels
